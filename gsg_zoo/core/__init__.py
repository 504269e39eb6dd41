"""The ground floor: devices, process groups, checkpoint files, checksums, constants and shipped configs."""
