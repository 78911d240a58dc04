"""(being written by a teammate; replaced wholesale)"""


def knn(*args, **kwargs):
    raise NotImplementedError
