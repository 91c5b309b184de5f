package testenv

import (
	"encoding/binary"
	"fmt"
	"sort"
	"syscall"
)

// A few nf_tables netlink messages, enough to list the kernel's tables and
// delete whole ones. iptables-nft creates its tables (ip filter, ip nat,
// ...) on first use and has no way to delete them again; Debian's nft tool
// is not installed on these machines. The real node removes the tables its
// components created, so that the host's ruleset is as it was.

const (
	nfnlSubsysNFTables = 10
	nftMsgNewTable     = 0
	nftMsgGetTable     = 1
	nftMsgDelTable     = 2
	nfnlMsgBatchBegin  = 0x10
	nfnlMsgBatchEnd    = 0x11
	nftaTableName      = 1
)

// nftTable is one table: its family (syscall.AF_INET = ip, AF_INET6 = ip6,
// ...) and name.
type nftTable struct {
	Family uint8
	Name   string
}

func (t nftTable) String() string {
	fam := map[uint8]string{1: "inet", 2: "ip", 3: "arp", 7: "bridge", 10: "ip6", 5: "netdev"}[t.Family]
	if fam == "" {
		fam = fmt.Sprint(t.Family)
	}
	return fam + " " + t.Name
}

// nlMsg appends a netlink message with an nfgenmsg header and attrs.
func nlMsg(b []byte, typ, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
	n := 16 + 4 + len(attrs)
	h := make([]byte, 20)
	binary.NativeEndian.PutUint32(h[0:], uint32(n))
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	h[16] = family
	h[17] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(h[18:], resID)
	b = append(b, h...)
	b = append(b, attrs...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlAttrString(typ uint16, s string) []byte {
	v := append([]byte(s), 0)
	a := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

// nftRequest sends req and reads the replies until the kernel says done or
// acknowledges; each reply message of type NEWTABLE goes to each.
func nftRequest(req []byte, each func(family uint8, payload []byte)) error {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("opening a netfilter netlink socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending to netfilter: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("reading from netfilter: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("reading from netfilter: %w", err)
		}
		for _, m := range msgs {
			switch {
			case m.Header.Type == syscall.NLMSG_DONE:
				return nil
			case m.Header.Type == syscall.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return fmt.Errorf("netfilter: short error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return fmt.Errorf("netfilter: %w", syscall.Errno(-errno))
				}
				return nil // the acknowledgement
			case m.Header.Type == nfnlSubsysNFTables<<8|nftMsgNewTable && len(m.Data) >= 4 && each != nil:
				each(m.Data[0], m.Data[4:])
			}
		}
	}
}

// nftTables lists the kernel's nf_tables tables, of every family.
func nftTables() ([]nftTable, error) {
	req := nlMsg(nil, nfnlSubsysNFTables<<8|nftMsgGetTable, syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP, 1, syscall.AF_UNSPEC, 0, nil)
	var tables []nftTable
	err := nftRequest(req, func(family uint8, payload []byte) {
		for len(payload) >= 4 {
			l := int(binary.NativeEndian.Uint16(payload[0:]))
			typ := binary.NativeEndian.Uint16(payload[2:]) & 0x3fff
			if l < 4 || l > len(payload) {
				return
			}
			if typ == nftaTableName {
				v := payload[4:l]
				if len(v) > 0 && v[len(v)-1] == 0 {
					v = v[:len(v)-1]
				}
				tables = append(tables, nftTable{Family: family, Name: string(v)})
			}
			payload = payload[min((l+3)&^3, len(payload)):]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing nf_tables tables: %w", err)
	}
	sort.Slice(tables, func(i, j int) bool { return tables[i].String() < tables[j].String() })
	return tables, nil
}

// deleteNFTTable deletes a table with everything in it.
func deleteNFTTable(t nftTable) error {
	var req []byte
	req = nlMsg(req, nfnlMsgBatchBegin, syscall.NLM_F_REQUEST, 1, syscall.AF_UNSPEC, nfnlSubsysNFTables, nil)
	req = nlMsg(req, nfnlSubsysNFTables<<8|nftMsgDelTable, syscall.NLM_F_REQUEST|syscall.NLM_F_ACK, 2, t.Family, 0, nlAttrString(nftaTableName, t.Name))
	req = nlMsg(req, nfnlMsgBatchEnd, syscall.NLM_F_REQUEST, 3, syscall.AF_UNSPEC, nfnlSubsysNFTables, nil)
	if err := nftRequest(req, nil); err != nil {
		return fmt.Errorf("deleting nf_tables table %s: %w", t, err)
	}
	return nil
}
