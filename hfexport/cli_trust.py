"""`hfexport sign` and `hfexport verify`: signed bundles with the OpenSSF model-signing library."""

from __future__ import annotations

import click

from hfexport._cli_errors import handle_errors


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--private-key", required=True, type=click.Path(),
              help="PEM elliptic-curve private key (P-256, P-384 or P-521); $HFEXPORT_KEY_PASSWORD opens an "
                   "encrypted one.")
@handle_errors
def sign(bundle, private_key) -> None:
    """Sign a bundle: BUNDLE/model.sig over manifest.json and every file (needs hfexport[sign]).

    Make a key pair with: openssl ecparam -name prime256v1 -genkey -noout -out key.pem &&
    openssl ec -in key.pem -pubout -out key.pub
    """
    from hfexport.runtime.signing import sign_bundle

    info = sign_bundle(bundle, private_key)
    click.echo(f"signed {bundle}: {info.path.name} by {info.signer}; check it with "
               f"'hfexport verify {bundle} --public-key KEY.pub'")


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--public-key", required=True, type=click.Path(), help="PEM public key of the signer.")
@handle_errors
def verify(bundle, public_key) -> None:
    """Check a bundle's signature, paths and every file against the signer's public key (exit 1 if any fails)."""
    from pathlib import Path

    from hfexport.runtime.manifest import read_manifest, verify_files
    from hfexport.runtime.paths import check_bundle_paths
    from hfexport.runtime.signing import verify_bundle

    info = verify_bundle(bundle, public_key)
    path = Path(bundle).expanduser()
    manifest = read_manifest(path)
    check_bundle_paths(path, manifest)
    verify_files(path, manifest)
    click.echo(f"verified {bundle}: signed by {info.signer}; all {len(manifest.files)} files match")
