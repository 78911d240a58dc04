"""(being written by a teammate; replaced wholesale)"""


def hscore(*args, **kwargs):
    raise NotImplementedError


def shrinkage_hscore(*args, **kwargs):
    raise NotImplementedError
