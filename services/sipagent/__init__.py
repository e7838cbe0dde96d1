"""The SIP user agent service: places the bridge's calls on the trunk."""
