"""Backup and restore of the stack's state: the operations (run), the backup directory and its
manifest (manifest, pure), and the parts that dump and restore themselves (postgres, redis, the
S3 objects, the env file).

Uses the stack to stop the writers and start again, and the health check to confirm a restore.
"""
