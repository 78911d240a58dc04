"""(being written by a teammate; replaced wholesale)"""


def parc(*args, **kwargs):
    raise NotImplementedError
