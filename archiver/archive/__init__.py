"""Reading and keeping what is in the bucket: listing a partition's archives, checking objects,
and the operator's restore, verify, prune and reconcile."""
