"""Where work runs: starting or joining Ray, the `ray up` cluster file, what a trial asks the cluster for."""
