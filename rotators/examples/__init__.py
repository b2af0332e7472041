"""Custom rotators to copy: each module is one small subclass with its Lambda `handler`."""
