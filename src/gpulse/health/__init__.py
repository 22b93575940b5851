"""gpulse watching itself: its CloudWatch alarms (`alarms`) and its own exceptions (`crash`)
become findings on the default route, rendered like every other alert."""

CLUSTER = "gpulse"  # the cluster label of gpulse's own alerts: routes and silences can match it
