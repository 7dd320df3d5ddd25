"""What passes see while planning (PlanContext) and while running (BuildContext)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hfexport.loading import ModelSource
from hfexport.profiles import TargetProfile
from hfexport.progress import Progress
from hfexport.recipe_schema import Recipe


@dataclass(frozen=True)
class PlanContext:
    target: TargetProfile
    recipe: Recipe
    source: ModelSource
    has_calibration_data: bool = True


@dataclass
class BuildContext:
    target: TargetProfile
    recipe: Recipe
    source: ModelSource
    workdir: Path
    tokenizer_dir: Path  # the bundle's preprocessing: tokenizer files, or the image processor's config
    calibration_texts: list[str]  # image tasks: image files, or "synthetic:<n>" for the generated images
    progress: Progress = field(default_factory=Progress)
    train_texts: list[str] | None = None  # --train-data for distillation; calibration text otherwise
    # Every stage folder opened in this build, in order: the runner stores a pass's folder in the stage cache.
    stage_dirs: list[Path] = field(default_factory=list)
    _torch_cache: dict = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        """A fresh folder for one pass's output; passes write only here."""
        path = self.workdir / f"{len(self.stage_dirs) + 1:02d}-{name}"
        path.mkdir(parents=True, exist_ok=False)
        self.stage_dirs.append(path)
        return path

    def torch_module(self, path: Path):
        """The PyTorch model of a TorchModel artifact, loaded once per build."""
        if path not in self._torch_cache:
            from hfexport.loading import load_torch_model

            self._torch_cache[path] = load_torch_model(self.source, path)
        return self._torch_cache[path]

    def release_torch_module(self, path: Path) -> None:
        """Forget the PyTorch model of `path` (a large model's export frees its weights before quantisation); a
        later `torch_module` loads it again."""
        import gc

        if self._torch_cache.pop(path, None) is not None:
            gc.collect()

    @property
    def modality(self) -> str:
        from hfexport.tasks import get_task

        return getattr(get_task(self.source.task), "modality", "text")

    def hf_processor(self):
        """The transformers image processor saved for the bundle (image tasks; `tokenizer_dir` holds it)."""
        if "processor" not in self._torch_cache:
            from transformers import AutoFeatureExtractor, AutoImageProcessor

            from hfexport._quiet import quiet_libraries

            auto = AutoFeatureExtractor if self.modality == "audio" else AutoImageProcessor  # speech: waveform in
            with quiet_libraries():  # "requires torchvision ... falling back to the PIL backend"
                self._torch_cache["processor"] = auto.from_pretrained(str(self.tokenizer_dir))
        return self._torch_cache["processor"]

    def input_processor(self):
        """What turns this task's inputs into the model's: the tokenizer, or the image processor."""
        return self.hf_processor() if self.modality != "text" else self.hf_tokenizer()

    def hf_tokenizer(self):
        if "tokenizer" not in self._torch_cache:
            from transformers import AutoTokenizer

            self._torch_cache["tokenizer"] = AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
        return self._torch_cache["tokenizer"]
