"""The admin service every node runs, and the shell and one-shot commands that use it."""
