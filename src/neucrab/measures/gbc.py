"""(being written by a teammate; replaced wholesale)"""


def gbc(*args, **kwargs):
    raise NotImplementedError
