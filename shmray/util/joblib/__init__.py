"""``shmray.util.joblib``: joblib's "ray" backend on shmray (Ray's ``ray.util.joblib``).

    from shmray.util.joblib import register_ray
    register_ray()
    with joblib.parallel_backend("ray"):
        joblib.Parallel(n_jobs=4)(joblib.delayed(f)(x) for x in data)

Importing this package does not import joblib (a worker imports it to run a batch,
and ``shmray.util`` may name it): ``register_ray()`` does, and says how to install
it when it is missing.
"""

_INSTALL = "pip install 'shmray[joblib]'"


def register_ray() -> None:
    """Register the parallel backend "ray" with joblib: shmray's pool runs the batches
    (on the Ray-cluster path, Ray's own backend does)."""
    try:
        import joblib  # (here: see the module's docstring)
    except ImportError as e:
        raise ImportError(f"To use the 'ray' joblib backend you must install joblib: "
                          f"{_INSTALL}") from e
    from .ray_backend import RayBackend

    joblib.register_parallel_backend("ray", RayBackend)


__all__ = ["register_ray"]
