"""The one container image: every pipeline step, the predictor, the collector and the drift job.

Its name is defined here and its tag derives from the package version, so the compiled
pipeline, the manifests (``images:`` in each overlay) and the Dockerfile agree; a test
checks all three.
"""

from driftloop import __version__

IMAGE_NAME = "ghcr.io/driftloop/driftloop"
IMAGE = f"{IMAGE_NAME}:{__version__}"
