"""The fault suite (``make faults``, issue 8): docs/faults.md."""
