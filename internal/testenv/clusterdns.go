package testenv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ClusterDNS is the real node's cluster DNS: a small authoritative server
// for the cluster domain, over UDP and TCP on one port, that answers
//
//   - A and AAAA for <service>.<namespace>.svc.<domain> with the Service's
//     ClusterIPs of that family (NOERROR with no answer, NODATA, when the
//     Service has none of that family, is headless or an ExternalName);
//   - NXDOMAIN for every other name in the domain (the apex itself only
//     has an SOA);
//   - REFUSED for names outside the domain: there is no upstream to ask.
//
// It looks each Service up in the API server, remembering answers for a
// second. Negative answers carry an SOA, whose TTL bounds how long
// resolvers remember them.
type ClusterDNS struct {
	// Domain is the cluster domain, without the final dot.
	Domain string

	cs     kubernetes.Interface
	udp    net.PacketConn
	tcp    net.Listener
	addr   netip.AddrPort
	wg     sync.WaitGroup
	stop   chan struct{}
	closed sync.Once

	mu    sync.Mutex
	cache map[string]serviceAnswer
}

// serviceAnswer is what the API server said of a Service, and when.
type serviceAnswer struct {
	ips     []netip.Addr // nil: no such Service
	expires time.Time
}

const (
	dnsTTL      = 5 // seconds, for answers and the SOA's negative TTL
	dnsCacheFor = time.Second
	dnsTCPIdle  = 10 * time.Second
)

// StartClusterDNS serves the cluster domain (cluster.local when empty) on
// addr, UDP and TCP on the same port ("127.0.0.1:0" picks one; see Addr),
// looking Services up with cs. Close stops it.
func StartClusterDNS(cs kubernetes.Interface, addr, domain string) (*ClusterDNS, error) {
	if domain == "" {
		domain = "cluster.local"
	}
	d := &ClusterDNS{Domain: strings.TrimSuffix(strings.ToLower(domain), "."), cs: cs,
		stop: make(chan struct{}), cache: map[string]serviceAnswer{}}
	var err error
	// With port 0 the TCP port is the one UDP got, which may be taken for
	// TCP: try a few.
	for try := 0; ; try++ {
		if d.udp, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("cluster DNS: %w", err)
		}
		d.addr = d.udp.LocalAddr().(*net.UDPAddr).AddrPort()
		d.addr = netip.AddrPortFrom(d.addr.Addr().Unmap(), d.addr.Port())
		if d.tcp, err = net.Listen("tcp", d.addr.String()); err == nil {
			break
		}
		d.udp.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || try == 4 {
			return nil, fmt.Errorf("cluster DNS: %w", err)
		}
	}
	d.wg.Add(2)
	go d.serveUDP()
	go d.serveTCP()
	return d, nil
}

// Addr is where it listens, UDP and TCP.
func (d *ClusterDNS) Addr() netip.AddrPort { return d.addr }

// Close stops the server and waits for its goroutines.
func (d *ClusterDNS) Close() error {
	d.closed.Do(func() {
		close(d.stop)
		d.udp.Close()
		d.tcp.Close()
	})
	d.wg.Wait()
	return nil
}

func (d *ClusterDNS) serveUDP() {
	defer d.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := d.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if resp := d.answer(buf[:n], 512); resp != nil {
			d.udp.WriteTo(resp, from)
		}
	}
}

func (d *ClusterDNS) serveTCP() {
	defer d.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := d.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-d.stop:
					c.Close()
				case <-done:
				}
			}()
			for {
				c.SetDeadline(time.Now().Add(dnsTCPIdle))
				var size [2]byte
				if _, err := io.ReadFull(c, size[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(size[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				resp := d.answer(msg, 65535)
				if resp == nil {
					return
				}
				if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
					return
				}
			}
		}()
	}
}

// answer returns the response to the query msg, at most limit bytes long
// (truncated beyond), or nil for a message not worth an answer.
func (d *ClusterDNS) answer(msg []byte, limit int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	q, qerr := p.Question()
	switch {
	case h.OpCode != 0:
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, nil, nil, nil)
	case qerr != nil:
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil, nil)
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	if name != d.Domain && !strings.HasSuffix(name, "."+d.Domain) {
		resp.RCode = dnsmessage.RCodeRefused
		return build(resp, &q, nil, nil)
	}
	resp.Authoritative = true
	soa := []dnsmessage.Resource{d.soa()}
	if name == d.Domain {
		if q.Type == dnsmessage.TypeSOA {
			return build(resp, &q, soa, nil)
		}
		return build(resp, &q, nil, soa)
	}
	labels := strings.Split(strings.TrimSuffix(name, "."+d.Domain), ".")
	if len(labels) != 3 || labels[2] != "svc" {
		resp.RCode = dnsmessage.RCodeNameError
		return build(resp, &q, nil, soa)
	}
	ips, err := d.service(labels[1], labels[0])
	if err != nil {
		resp.RCode = dnsmessage.RCodeServerFailure
		return build(resp, &q, nil, nil)
	}
	if ips == nil {
		resp.RCode = dnsmessage.RCodeNameError
		return build(resp, &q, nil, soa)
	}
	var answers []dnsmessage.Resource
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
	for _, ip := range ips {
		switch {
		case q.Type == dnsmessage.TypeA && ip.Is4():
			rh.Type = dnsmessage.TypeA
			answers = append(answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: ip.As4()}})
		case q.Type == dnsmessage.TypeAAAA && ip.Is6():
			rh.Type = dnsmessage.TypeAAAA
			answers = append(answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: ip.As16()}})
		}
	}
	if len(answers) == 0 {
		return build(resp, &q, nil, soa) // NODATA
	}
	out := build(resp, &q, answers, nil)
	if len(out) > limit {
		resp.Truncated = true
		return build(resp, &q, nil, nil)
	}
	return out
}

func (d *ClusterDNS) soa() dnsmessage.Resource {
	zone := dnsmessage.MustNewName(d.Domain + ".")
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: zone, Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET, TTL: dnsTTL},
		Body: &dnsmessage.SOAResource{NS: dnsmessage.MustNewName("ns.dns." + d.Domain + "."),
			MBox: dnsmessage.MustNewName("hostmaster." + d.Domain + "."), Serial: 1,
			Refresh: 7200, Retry: 1800, Expire: 86400, MinTTL: dnsTTL},
	}
}

// build packs a response; q is nil when the question could not be read.
func build(h dnsmessage.Header, q *dnsmessage.Question, answers, authority []dnsmessage.Resource) []byte {
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if q != nil {
		b.StartQuestions()
		b.Question(*q)
	}
	b.StartAnswers()
	for _, r := range answers {
		addResource(&b, r)
	}
	b.StartAuthorities()
	for _, r := range authority {
		addResource(&b, r)
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func addResource(b *dnsmessage.Builder, r dnsmessage.Resource) {
	switch body := r.Body.(type) {
	case *dnsmessage.AResource:
		b.AResource(r.Header, *body)
	case *dnsmessage.AAAAResource:
		b.AAAAResource(r.Header, *body)
	case *dnsmessage.SOAResource:
		b.SOAResource(r.Header, *body)
	}
}

// service returns the ClusterIPs of a Service (empty, not nil, for a
// headless or ExternalName Service), or nil when there is no such Service.
func (d *ClusterDNS) service(namespace, name string) ([]netip.Addr, error) {
	key := namespace + "/" + name
	d.mu.Lock()
	a, ok := d.cache[key]
	d.mu.Unlock()
	if ok && time.Now().Before(a.expires) {
		return a.ips, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	svc, err := d.cs.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		a.ips = nil
	case err != nil:
		return nil, err
	default:
		a.ips = []netip.Addr{}
		if svc.Spec.Type != corev1.ServiceTypeExternalName {
			for _, s := range svc.Spec.ClusterIPs {
				if ip, err := netip.ParseAddr(s); err == nil {
					a.ips = append(a.ips, ip)
				}
			}
		}
	}
	a.expires = time.Now().Add(dnsCacheFor)
	d.mu.Lock()
	d.cache[key] = a
	d.mu.Unlock()
	return a.ips, nil
}
