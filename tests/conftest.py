"""Every test process gathers ICE candidates on 127.0.0.1 alone.

aioice skips loopback and gathers on every other interface by default; the
aiortc peers the tests make (browser stand-ins, and the media legs of unit
tests) would then talk over the host's own network addresses. The services
the tests start do the same from RTP_BIND_HOST=127.0.0.1.
"""

from services.media.browser_transport import gather_on

gather_on("127.0.0.1")
