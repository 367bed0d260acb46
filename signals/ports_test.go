package signals

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

var loopback = netip.MustParseAddr("127.0.0.1")

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 579 1 00000000e991c3ad 100 0 0 10 0
   1: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 40171 2 00000000a951f4ce 100 0 0 10 0
   2: 0100007F:0BB8 0100007F:D431 06 00000000:00000000 03:0000122A 00000000     0        0 0 3 000000000280498f
   3: 0501A8C0:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   4: garbage
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 888 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 889 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 890 1 0000000000000000 100 0 0 10 0
`

func TestParseProcNet(t *testing.T) {
	got := parseProcNet([]byte(procNetTCP + strings.SplitN(procNetTCP6, "\n", 2)[1]))
	want := []struct {
		addr   string
		port   int
		state  uint8
		uid    int
		inode  uint64
		blocks bool
	}{
		{"0.0.0.0", 2024, 0x0A, 0, 579, true},
		{"127.0.0.1", 3000, 0x0A, 1000, 40171, true},
		{"127.0.0.1", 3000, 0x06, 0, 0, true},
		{"192.168.1.5", 3000, 0x0A, 0, 777, false},
		{"::", 3000, 0x0A, 0, 888, true},
		{"::1", 3000, 0x0A, 0, 889, false},
		{"::ffff:127.0.0.1", 3000, 0x0A, 0, 890, true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if e.Addr != netip.MustParseAddr(w.addr) || e.Port != w.port || e.State != w.state || e.UID != w.uid || e.Inode != w.inode {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
		if got := e.blocks(loopback); got != w.blocks {
			t.Errorf("entry %d (%s) blocks 127.0.0.1: %v, want %v", i, e.Addr, got, w.blocks)
		}
		if !e.blocks(netip.IPv4Unspecified()) || !e.blocks(netip.Addr{}) {
			t.Errorf("entry %d (%s) does not block a listener on every address", i, e.Addr)
		}
	}
}

func FuzzParseProcNet(f *testing.F) {
	f.Add([]byte(procNetTCP))
	f.Add([]byte(procNetTCP6))
	f.Add([]byte("h\n0: 0100007F:FFFF 0:0 0A a b c 0 d 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range parseProcNet(data) {
			if e.Port < 0 || e.Port > 65535 || !e.Addr.IsValid() {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func TestSocketInode(t *testing.T) {
	for in, want := range map[string]uint64{"socket:[40171]": 40171, "pipe:[5]": 0, "socket:[x]": 0, "socket:[7": 0, "/dev/null": 0} {
		got, ok := socketInode(in)
		if got != want || ok != (want != 0) {
			t.Errorf("socketInode(%q) = %d, %v", in, got, ok)
		}
	}
}

// PortHolders finds this process behind its own listener, for the
// addresses that listener keeps others off, and for no other.
func TestPortHolders(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	me, err := IdentityOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{loopback, netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		holders, err := PortHolders(ip, port)
		if err != nil || len(holders) != 1 || holders[0].Identity != me || holders[0].UID != os.Getuid() {
			t.Errorf("PortHolders(%s, %d) = %+v, %v; want this process alone", ip, port, holders, err)
		}
	}
	// 192.0.2.1 (TEST-NET-1): a listener on 127.0.0.1 does not keep one off it.
	if holders, err := PortHolders(netip.MustParseAddr("192.0.2.1"), port); err != nil || len(holders) != 0 {
		t.Errorf("PortHolders(192.0.2.1, %d) = %+v, %v; want none", port, holders, err)
	}
	if got, want := (PortHolder{Identity: me, Name: "x"}).String(), fmt.Sprintf("pid %d (x)", me.Pid); got != want {
		t.Errorf("String = %q; want %q", got, want)
	}
	if got, want := (PortHolder{UID: 1000}).String(), "a process of uid 1000 that wa-sidecar cannot see"; got != want {
		t.Errorf("String = %q; want %q", got, want)
	}
}
