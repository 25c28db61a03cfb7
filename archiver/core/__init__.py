"""The pure core: LSNs, object names, the per-partition state machine, notifications, the
producer's on-disk layout, tar and compression. Nothing here knows Redis, Celery or boto3; the
Lua scripts in ``archiver/store/lua/`` implement the state machine and a test holds them to it."""
