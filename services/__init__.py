"""The bridge's processes: signaling, sipagent and media, plus what they share."""
