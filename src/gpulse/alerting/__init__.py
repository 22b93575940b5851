"""Alert state (pending → firing → resolved) and the delivery of transitions."""
