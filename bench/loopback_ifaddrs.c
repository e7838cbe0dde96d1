/*
 * LD_PRELOAD for the Janus benchmark: getifaddrs() with the loopback flag
 * cleared on the interface that holds 127.0.0.1.
 *
 * Janus 1.1 skips every interface flagged IFF_LOOPBACK when it gathers ICE
 * host candidates, whatever its enforce list says, and then lets libnice
 * gather on all the other interfaces. With this, and ice_enforce_list set to
 * 127.0.0.1, its only host candidate is 127.0.0.1, so the benchmark's WebRTC
 * traffic stays on loopback. Nothing else in Janus changes.
 *
 * Built by bench/janus.py at run time: cc -shared -fPIC -o X.so this.c -ldl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>

typedef int (*getifaddrs_fn)(struct ifaddrs **);

int getifaddrs(struct ifaddrs **ifap) {
	static getifaddrs_fn real = NULL;
	if (real == NULL)
		real = (getifaddrs_fn)dlsym(RTLD_NEXT, "getifaddrs");
	if (real == NULL)
		return -1;
	int rc = real(ifap);
	if (rc != 0)
		return rc;
	for (struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next) {
		if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != AF_INET)
			continue;
		const struct sockaddr_in *in = (const struct sockaddr_in *)ifa->ifa_addr;
		if (in->sin_addr.s_addr == htonl(INADDR_LOOPBACK))
			ifa->ifa_flags &= ~IFF_LOOPBACK;
	}
	return rc;
}
