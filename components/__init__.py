"""KFP v2 components: one module each, a typed signature calling into ``driftloop.steps``.

Every component runs the one project image (``driftloop.image.IMAGE``) with driftloop
already installed, so the compiled pipeline installs nothing at run time.
"""

import functools

from kfp import dsl

from driftloop.image import IMAGE

component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)
