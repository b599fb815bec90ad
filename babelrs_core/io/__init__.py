"""Input/output helpers shared by every stage (atomic writes, image reading)."""
