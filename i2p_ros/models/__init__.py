"""Network definitions: 2D reference networks (ImageNet priors) and the inflated sparse 3D models.

Kept light on purpose: importing :mod:`i2p_ros.models` loads nothing heavy; import the submodules
(:mod:`.resnet2d`, :mod:`.efficientnet2d`, ...) for the classes.
"""
