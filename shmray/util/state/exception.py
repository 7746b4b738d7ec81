"""The state API's errors (``ray.util.state.exception``)."""


class RayStateApiException(Exception):
    """A state query failed: its session did not answer, a filter names a column the
    records have no filter for, or the output would be incomplete."""
