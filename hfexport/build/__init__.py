"""The build side: plan, pass runner, bundle writing, manifest."""
