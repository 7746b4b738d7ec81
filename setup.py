"""Build the C extensions shmray._cring and shmray._crecords from csrc/; everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shmray._cring",
            sources=["csrc/cringmodule.c", "csrc/ring_any.c", "csrc/ring.c"],
            depends=["csrc/ring.h", "csrc/cring.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        ),
        Extension(
            "shmray._crecords",
            sources=["csrc/recordsmodule.c", "csrc/lane.c", "csrc/lane_place.c", "csrc/lane_done.c", "csrc/done_form.c", "csrc/lane_refs.c",
                     "csrc/lane_queue.c", "csrc/lane_remote.c", "csrc/remote_call.c", "csrc/section_lock.c", "csrc/lane_send.c",
                     "csrc/inline_values.c", "csrc/task_form.c", "csrc/actor_call.c",
                     "csrc/actor_method.c", "csrc/status_words.c",
                     "csrc/item_form.c", "csrc/ids.c"],
            depends=["csrc/records.h", "csrc/lane.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
        ),
    ]
)
