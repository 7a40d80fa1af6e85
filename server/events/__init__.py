"""What happens after inference: the event store, alert rules and their delivery (issue 13)."""
