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

func TestPageStates(t *testing.T) {
	page := uintptr(os.Getpagesize())
	const start = 0x400000
	file, absent := uint64(pagePresent|pageFile), uint64(0)
	for _, tc := range []struct {
		name     string
		entries  []uint64
		resident int64
		pristine bool
	}{
		{"the file's pages, some resident", []uint64{file, absent, file, file}, 3, true},
		{"none resident", []uint64{absent, absent}, 0, true},
		{"a copy made on write", []uint64{file, pagePresent, file}, 0, false},
		{"a copy swapped out", []uint64{file, pageSwapped, file}, 0, false},
		{"more pages than one read takes", append(make([]uint64, 700), file), 1, true},
		{"a copy past the first read", append(make([]uint64, 600), pagePresent), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mapping{start: start, end: start + uintptr(len(tc.entries))*page}
			resident, pristine, err := pageStates(fakePagemap(start, tc.entries...), m)
			if err != nil || resident != tc.resident || pristine != tc.pristine {
				t.Errorf("got %d resident, pristine %v, %v; want %d, %v", resident, pristine, err, tc.resident, tc.pristine)
			}
		})
	}
	t.Run("a page table that ends early", func(t *testing.T) {
		m := mapping{start: start, end: start + 4*page}
		if _, _, err := pageStates(fakePagemap(start, file, file), m); err == nil {
			t.Error("no error")
		}
	})
}

// residentExecKiB is the resident KiB of this process's own code and
// read-only data, as /proc/self/smaps gives them.
func residentExecKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	mine := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 6 && !strings.HasSuffix(f[0], ":"):
			mine = f[5] == exe && !strings.Contains(f[1], "w")
		case mine && len(f) >= 2 && f[0] == "Rss:":
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q", line)
			}
			sum += n
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

// TestPageStatesOfARealMapping checks the page table's flags as this
// kernel gives them: a private mapping of a file that was only read is the
// file's own; once a page was written to, it holds a copy.
func TestPageStatesOfARealMapping(t *testing.T) {
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
	if resident, pristine, err := pageStates(pagemap, m); err != nil || resident < 2 || !pristine {
		t.Fatalf("two pages read: %d resident, pristine %v, %v", resident, pristine, err)
	}
	b[3*page] = 8
	if _, pristine, err := pageStates(pagemap, m); err != nil || pristine {
		t.Fatalf("a page written to: pristine %v, %v", pristine, err)
	}
}
