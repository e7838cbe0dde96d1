"""The media service: WebRTC (aiortc) toward the browser, plain RTP (G.711) toward the trunk."""
