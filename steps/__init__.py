"""Code that runs inside the project's one container image, one module per step."""
