package discovery

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/meshctl/mesh/internal/meshapi"
)

// BenchmarkResolveNewService is the first-request cost of a virtual
// address the proxy does not know, owned by a service it does not hold
// either: the subscription, the controller's Resolution, Service and
// Endpoints, each applied and ACKed, over loopback to controllertest
// (with a compile that costs nothing; the proxy's own comes on top).
func BenchmarkResolveNewService(b *testing.B) {
	c := newController(b)
	f := start(b, c, nil)
	f.client.opts.MaxAddresses = 1 << 30
	f.client.opts.OnUpdate = func(*meshapi.Set) {}
	f.waitAck(b, meshapi.KindBundle, "", 1)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		name := fmt.Sprintf("bench/svc-%d", i)
		ip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
		addr := netip.AddrPortFrom(ip, 80)
		c.Publish(service(name, ip.String(), 80))
		c.Publish(endpoints(name, 1, "10.0.0.1"))
		c.Publish(meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: addr.String(), Version: 1, Resolution: &meshapi.Resolution{Address: addr.String(), Service: name}})
		b.StartTimer()
		svc, err := f.client.Resolve(b.Context(), addr)
		if err != nil || svc != name {
			b.Fatalf("Resolve = %q, %v", svc, err)
		}
	}
}
