package signals

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestExecMappings(t *testing.T) {
	const exe = " fe:00 9986170                            /usr/local/bin/wa-sidecar\n"
	const (
		text   = "00400000-00947000 r-xp 00000000" + exe
		rodata = "00947000-00ecb000 r--p 00547000" + exe
		data   = "00ecb000-00f30000 rw-p 00acb000" + exe
		bss    = "00f30000-02f75000 rw-p 00000000 00:00 0 \n"
		libc   = "7f0000000000-7f0000100000 r-xp 00000000 fe:00 1234  /usr/lib/libc.so.6\n"
		pc     = 0x00401234
	)
	for _, tc := range []struct {
		name string
		maps string
		pc   uintptr
		want []uintptr // start addresses of the mappings picked
	}{
		{"a static binary: its code and read-only data", text + rodata + data + bss + libc, pc, []uintptr{0x400000, 0x947000}},
		{"the executable is told by the address, not by a path", text + rodata +
			"00f40000-00f50000 r--p 00000000 fe:00 9986170  /elsewhere/a link\n" +
			"00f50000-00f60000 r--p 00000000 fe:01 9986170  /usr/local/bin/wa-sidecar\n",
			pc, []uintptr{0x400000, 0x947000, 0xf40000}},
		{"an address in no mapping: nothing", text + rodata, 0x300000, nil},
		{"an address in an anonymous mapping: nothing", text + bss, 0xf30010, nil},
		{"shared mappings stay", "00400000-00947000 r-xs 00000000" + exe, pc, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			maps, err := readMaps(strings.NewReader(tc.maps))
			if err != nil {
				t.Fatal(err)
			}
			var got []uintptr
			for _, m := range execMappings(maps, tc.pc) {
				got = append(got, m.start)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("picked %#x, want %#x", got, tc.want)
			}
		})
	}
}

func TestReadMapsRejectsAGarbledLine(t *testing.T) {
	for _, line := range []string{
		"00400000 r-xp 00000000 fe:00 1 /x",
		"00947000-00400000 r-xp 00000000 fe:00 1 /x",
		"zz-00947000 r-xp 00000000 fe:00 1 /x",
		"00400000-00947000 r-xp 00000000 fe:00 inode /x",
		"00400000-00947000 r-xp",
	} {
		if _, err := readMaps(strings.NewReader(line + "\n")); !errors.Is(err, errMaps) {
			t.Errorf("%q: got %v, want errMaps", line, err)
		}
	}
}

// fakePagemap is a page table of entries for the pages from start on.
func fakePagemap(start uintptr, entries ...uint64) *bytes.Reader {
	page := uintptr(os.Getpagesize())
	b := make([]byte, start/page*8+uintptr(len(entries))*8)
	for i, e := range entries {
		binary.NativeEndian.PutUint64(b[start/page*8+uintptr(i)*8:], e)
	}
	return bytes.NewReader(b)
}

// span is a range handed to release, in pages from the mapping's start.
type span struct{ from, to int }

func TestReleaseFilePages(t *testing.T) {
	page := uintptr(os.Getpagesize())
	const start = 0x400000
	file, absent, copied, swapped := uint64(pagePresent|pageFile), uint64(0), uint64(pagePresent), uint64(pageSwapped)
	many := func(n int, e uint64) []uint64 {
		s := make([]uint64, n)
		for i := range s {
			s[i] = e
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		entries  []uint64
		want     []span
		resident int64
	}{
		{"the file's pages, some resident", []uint64{file, absent, file, file}, []span{{0, 4}}, 3},
		{"none resident: nothing to release", []uint64{absent, absent}, nil, 0},
		{"a copy made on write stays", []uint64{file, copied, file, file}, []span{{0, 1}, {2, 4}}, 3},
		{"a copy swapped out stays", []uint64{file, swapped, absent}, []span{{0, 1}}, 1},
		{"only copies", []uint64{copied, swapped}, nil, 0},
		{"a run is cut at each read of 512 entries", many(700, file), []span{{0, 512}, {512, 700}}, 700},
		{"a copy past the first read", append(many(600, file), copied, file), []span{{0, 512}, {512, 600}, {601, 602}}, 601},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mapping{start: start, end: start + uintptr(len(tc.entries))*page}
			var got []span
			resident, err := releaseFilePages(fakePagemap(start, tc.entries...), m, func(a, b uintptr) error {
				got = append(got, span{int((a - start) / page), int((b - start) / page)})
				return nil
			})
			if err != nil || resident != tc.resident || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("released %v (%d resident), %v; want %v (%d)", got, resident, err, tc.want, tc.resident)
			}
		})
	}
	t.Run("a page table that ends early", func(t *testing.T) {
		m := mapping{start: start, end: start + 4*page}
		if _, err := releaseFilePages(fakePagemap(start, file, file), m, func(uintptr, uintptr) error { return nil }); err == nil {
			t.Error("no error")
		}
	})
	t.Run("a release that fails stops it", func(t *testing.T) {
		m := mapping{start: start, end: start + 3*page}
		calls := 0
		_, err := releaseFilePages(fakePagemap(start, file, copied, file), m, func(uintptr, uintptr) error {
			calls++
			return errors.New("refused")
		})
		if err == nil || calls != 1 {
			t.Errorf("%d calls, %v", calls, err)
		}
	})
}

// residentExecKiB is the resident KiB of this process's own code and
// read-only data, as /proc/self/smaps gives them: the mappings of the file
// whose mapping holds this function's code, told by device and inode.
func residentExecKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		m   mapping
		rss int64
	}
	var entries []entry
	for _, line := range strings.Split(string(b), "\n") {
		f := bytes.Fields([]byte(line))
		switch {
		case len(f) == 0:
		case !bytes.HasSuffix(f[0], []byte(":")):
			m, err := mapsLine(f)
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			entries = append(entries, entry{m: m})
		case string(f[0]) == "Rss:" && len(entries) > 0:
			n, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q", line)
			}
			entries[len(entries)-1].rss = n
		}
	}
	pc := reflect.ValueOf(residentExecKiB).Pointer()
	var exe *mapping
	for i := range entries {
		if entries[i].m.start <= pc && pc < entries[i].m.end {
			exe = &entries[i].m
		}
	}
	if exe == nil {
		t.Fatal("no mapping holds this test's code")
	}
	var sum int64
	for _, e := range entries {
		if e.m.dev == exe.dev && e.m.inode == exe.inode && !strings.Contains(e.m.perms, "w") {
			sum += e.rss
		}
	}
	return sum
}

func TestReleaseExecPages(t *testing.T) {
	before := residentExecKiB(t)
	released, err := ReleaseExecPages()
	if err != nil {
		t.Fatal(err)
	}
	after := residentExecKiB(t)
	t.Logf("resident code and read-only data: %d KiB before, %d KiB released, %d KiB after", before, released, after)
	if released <= 0 {
		t.Fatalf("released %d KiB of %d KiB resident", released, before)
	}
	// What reading smaps again touched comes back, the rest does not.
	if after >= before {
		t.Errorf("%d KiB resident after the release, %d KiB before", after, before)
	}
	// The process goes on: its code is mapped back as it runs.
	if again, err := ReleaseExecPages(); err != nil || again <= 0 {
		t.Errorf("a second release: %d KiB, %v", again, err)
	}
}

// TestReleaseOfARealMapping releases a private mapping of a file for real:
// the pages that were only read come back from the file, and a page that
// was written to, which holds a copy, keeps what was written.
func TestReleaseOfARealMapping(t *testing.T) {
	page := os.Getpagesize()
	f, err := os.Create(t.TempDir() + "/file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte{7}, 4*page)); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pagemap.Close()
	start := uintptr(unsafe.Pointer(&b[0]))
	m := mapping{start: start, end: start + uintptr(4*page)}
	if b[0]+b[2*page] != 14 {
		t.Fatal("the mapping does not hold the file")
	}
	b[3*page] = 8
	var released []uintptr
	resident, err := releaseFilePages(pagemap, m, func(a, e uintptr) error {
		released = append(released, a, e)
		return dontNeed(a, e)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The pages around a read may have come in with it, but the written
	// one is a copy and must be left out.
	if resident < 2 || !reflect.DeepEqual(released, []uintptr{start, start + uintptr(3*page)}) {
		t.Errorf("released %#x (%d resident); want [%#x %#x]", released, resident, start, start+uintptr(3*page))
	}
	if b[0] != 7 || b[2*page] != 7 || b[3*page] != 8 {
		t.Errorf("after the release: %d %d %d, want 7 7 8", b[0], b[2*page], b[3*page])
	}
}
