"""The contract between the bridge's services: events, subjects and their codec.

Nothing else is shared between signaling, sipagent and media.
"""
