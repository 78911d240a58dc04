"""(being written by a teammate; replaced wholesale)"""


def linear_probe(*args, **kwargs):
    raise NotImplementedError
