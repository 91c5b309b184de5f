package testenv_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/testenv"
)

func TestClusterDNS(t *testing.T) {
	env := testenv.Shared(t)
	ns := namespace(t, env, "clusterdns")
	ctx := context.Background()
	svc, err := env.Clientset().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = env.Clientset().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "headless"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dns, err := testenv.StartClusterDNS(env.Clientset(), "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	addr := dns.Addr().String()
	name := "web." + ns + ".svc.cluster.local."

	for _, tc := range []struct {
		network, name string
		qtype         dnsmessage.Type
		rcode         dnsmessage.RCode
		answer        string // the A record's address, if any
		soa           bool   // a negative answer's SOA in the authority section
	}{
		{"udp", name, dnsmessage.TypeA, dnsmessage.RCodeSuccess, svc.Spec.ClusterIP, false},
		{"udp", "WEB." + ns + ".svc.Cluster.Local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, svc.Spec.ClusterIP, false},
		{"tcp", name, dnsmessage.TypeA, dnsmessage.RCodeSuccess, svc.Spec.ClusterIP, false},
		{"udp", name, dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, "", true},
		{"udp", "headless." + ns + ".svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "", true},
		{"udp", "nothere." + ns + ".svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "", true},
		{"tcp", "nothere." + ns + ".svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "", true},
		{"udp", "web." + ns + ".svc.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "", true},
		{"udp", "cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "", true},
		{"udp", "example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, "", false},
		{"tcp", "example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, "", false},
	} {
		h, answers, authority := query(t, tc.network, addr, tc.name, tc.qtype)
		what := tc.network + " " + tc.qtype.String() + " " + tc.name
		if h.RCode != tc.rcode {
			t.Errorf("%s: rcode %v, want %v", what, h.RCode, tc.rcode)
		}
		if auth := tc.rcode != dnsmessage.RCodeRefused; h.Authoritative != auth {
			t.Errorf("%s: authoritative %v, want %v", what, h.Authoritative, auth)
		}
		var got string
		for _, r := range answers {
			if a, ok := r.Body.(*dnsmessage.AResource); ok {
				got = net.IP(a.A[:]).String()
			}
		}
		if got != tc.answer || len(answers) > 1 {
			t.Errorf("%s: answers %v, want one A %q", what, answers, tc.answer)
		}
		if gotSOA := len(authority) == 1 && authority[0].Header.Type == dnsmessage.TypeSOA; gotSOA != tc.soa {
			t.Errorf("%s: authority %v, want an SOA: %v", what, authority, tc.soa)
		}
	}

	// Go's own resolver, which asks A and AAAA at once and must take the
	// empty AAAA answer for "no IPv6 address".
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if addrs, err := r.LookupHost(lctx, name); err != nil || len(addrs) != 1 || addrs[0] != svc.Spec.ClusterIP {
		t.Errorf("LookupHost(%s) = %v, %v; want [%s]", name, addrs, err, svc.Spec.ClusterIP)
	}
	_, err = r.LookupHost(lctx, "nothere."+ns+".svc.cluster.local.")
	if dnsErr, ok := err.(*net.DNSError); !ok || !dnsErr.IsNotFound {
		t.Errorf("LookupHost of an unknown Service: %v, want no such host", err)
	}

	// A Service created after a miss resolves once the miss has expired
	// from the cache (a second).
	late := "late." + ns + ".svc.cluster.local."
	if h, _, _ := query(t, "udp", addr, late, dnsmessage.TypeA); h.RCode != dnsmessage.RCodeNameError {
		t.Fatalf("%s before it exists: %v", late, h.RCode)
	}
	lateSvc, err := env.Clientset().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, late+" resolving", func(context.Context) (bool, error) {
		_, answers, _ := query(t, "udp", addr, late, dnsmessage.TypeA)
		return len(answers) == 1 && net.IP(answers[0].Body.(*dnsmessage.AResource).A[:]).String() == lateSvc.Spec.ClusterIP, nil
	})

	if err := dns.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("TCP %s still accepts after Close", addr)
	}
}

// query asks addr one question over network (udp or tcp).
func query(t *testing.T, network, addr, name string, qtype dnsmessage.Type) (dnsmessage.Header, []dnsmessage.Resource, []dnsmessage.Resource) {
	t.Helper()
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x1234, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	packed, err := msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var resp []byte
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(packed))), packed...)); err != nil {
			t.Fatal(err)
		}
		var size [2]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		resp = make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
	} else {
		if _, err := c.Write(packed); err != nil {
			t.Fatal(err)
		}
		resp = make([]byte, 1500)
		n, err := c.Read(resp)
		if err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		resp = resp[:n]
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("%s %s: unpacking the answer: %v", network, name, err)
	}
	if m.ID != 0x1234 || !m.Response || len(m.Questions) != 1 || m.Questions[0].Name.String() != name {
		t.Errorf("%s %s: bad response header or question: %+v", network, name, m)
	}
	return m.Header, m.Answers, m.Authorities
}
