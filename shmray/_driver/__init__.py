"""The driver: one session's task table, dispatch, worker rpcs, runtime environments,
GPU objects and message loop, owned by a Session (see ARCHITECTURE.md). A worker
process never imports this package."""
