"""Load generation for selectd (crawler simulators)."""
