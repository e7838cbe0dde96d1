"""The signaling service: the page, the browser WebSocket and call set-up."""
