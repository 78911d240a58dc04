"""(being written by a teammate; replaced wholesale)"""


def leep(*args, **kwargs):
    raise NotImplementedError


def nce(*args, **kwargs):
    raise NotImplementedError


def nleep(*args, **kwargs):
    raise NotImplementedError
