"""(being written by a teammate; replaced wholesale)"""


def logme(*args, **kwargs):
    raise NotImplementedError
