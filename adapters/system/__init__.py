"""The host system: the wall clock and OS signals (the only place live code reads real time)."""
