package metrics

import (
	"bytes"
	"strings"
)

// help is the # HELP text of every metric family the sidecar serves: its
// own, and those of the library (Go runtime and process) that it knows of.
// The library writes a bare "# HELP name" line; helpText fills it in.
var help = map[string]string{
	nameExits:     "Ends of the bridge process, by the class of the exit (failure, shutdown, requested); a spawn that failed counts as failure.",
	nameRestarts:  "Spawns of the bridge after the first, by the class of the exit before them (failure, shutdown, requested).",
	nameState:     "1 for the state the bridge is in (starting, running, backoff, stopping, stopped, given_up, or one of the bridge layer such as needs_pairing or yielded), 0 for the others.",
	nameReady:     "1 while the bridge runs and is ready: connected to WhatsApp and, when the gateway's checks are known, adoptable by the gateway.",
	nameUptime:    "Seconds the current bridge process has run; 0 while none runs.",
	nameLastExit:  "The last exit of the bridge as the gateway logs it: the exit code, or minus the signal number (-15 for SIGTERM); absent until one.",
	nameFailures:  "Failures of the bridge in a row, since it last stayed up for the backoff reset time; a normal shutdown is not a failure.",
	nameCrashloop: "1 while the bridge is crash-looping: restarts go on at the longest backoff delay.",
	nameClients:   "Clients connected to the event websocket (/v1/events).",
	nameBuildInfo: "Always 1; the version label is the sidecar's version.",

	"go_info":                             "Always 1; the version label is the Go version the sidecar was built with.",
	"go_info_ext":                         "Always 1; the labels are the Go compiler, architecture, operating system and GOROOT of the build.",
	"go_goroutines":                       "Goroutines of the sidecar.",
	"go_threads":                          "Operating system threads the Go runtime created.",
	"go_gomaxprocs":                       "GOMAXPROCS: how many threads may run Go code at once.",
	"go_cpu_count":                        "Logical CPUs the sidecar's process may use.",
	"go_cgo_calls_count":                  "Calls into C made by the sidecar's process.",
	"go_memlimit_bytes":                   "The Go runtime's soft memory limit (GOMEMLIMIT).",
	"go_gc_duration_seconds":              "Pauses of the Go garbage collector, in seconds.",
	"go_gc_forced_count":                  "Garbage collections forced by the application.",
	"go_gc_pauses_seconds":                "Distribution of the Go garbage collector's stop-the-world pauses, in seconds.",
	"go_gc_cpu_seconds_total":             "CPU seconds spent in the Go garbage collector.",
	"go_gc_mark_assist_cpu_seconds_total": "CPU seconds goroutines spent helping the garbage collector mark.",
	"go_scavenge_cpu_seconds_total":       "CPU seconds the Go runtime spent returning memory to the operating system.",
	"go_sched_latencies_seconds":          "Distribution of the time goroutines waited to run after becoming runnable, in seconds.",
	"go_mutex_wait_seconds_total":         "Seconds goroutines spent blocked on a sync.Mutex or sync.RWMutex.",
	"go_memstats_alloc_bytes":             "Bytes of heap objects allocated and not yet freed.",
	"go_memstats_alloc_bytes_total":       "Bytes allocated for heap objects since the sidecar started.",
	"go_memstats_buck_hash_sys_bytes":     "Bytes of memory in the runtime's profiling bucket hash table.",
	"go_memstats_frees_total":             "Heap objects freed since the sidecar started.",
	"go_memstats_gc_cpu_fraction":         "Fraction of the sidecar's CPU time used by the garbage collector since it started.",
	"go_memstats_gc_sys_bytes":            "Bytes of memory in the garbage collector's metadata.",
	"go_memstats_heap_alloc_bytes":        "Bytes of heap objects allocated and not yet freed.",
	"go_memstats_heap_idle_bytes":         "Bytes of heap memory waiting to be used.",
	"go_memstats_heap_inuse_bytes":        "Bytes of heap memory in use.",
	"go_memstats_heap_objects":            "Heap objects allocated and not yet freed.",
	"go_memstats_heap_released_bytes":     "Bytes of heap memory returned to the operating system.",
	"go_memstats_heap_sys_bytes":          "Bytes of heap memory obtained from the operating system.",
	"go_memstats_last_gc_time_seconds":    "When the last garbage collection ended, in seconds since the Unix epoch.",
	"go_memstats_lookups_total":           "Pointer lookups done by the runtime.",
	"go_memstats_mallocs_total":           "Heap objects allocated since the sidecar started.",
	"go_memstats_mcache_inuse_bytes":      "Bytes of memory in use by mcache structures.",
	"go_memstats_mcache_sys_bytes":        "Bytes of memory obtained from the operating system for mcache structures.",
	"go_memstats_mspan_inuse_bytes":       "Bytes of memory in use by mspan structures.",
	"go_memstats_mspan_sys_bytes":         "Bytes of memory obtained from the operating system for mspan structures.",
	"go_memstats_next_gc_bytes":           "Heap size at which the next garbage collection starts.",
	"go_memstats_other_sys_bytes":         "Bytes of memory in other runtime allocations.",
	"go_memstats_stack_inuse_bytes":       "Bytes of memory in use by goroutine stacks.",
	"go_memstats_stack_sys_bytes":         "Bytes of memory obtained from the operating system for goroutine stacks.",
	"go_memstats_sys_bytes":               "Bytes of memory the Go runtime obtained from the operating system in all.",

	"process_cpu_seconds_total":                     "CPU seconds the sidecar's process used, user and system together.",
	"process_cpu_seconds_user_total":                "CPU seconds the sidecar's process used in user mode.",
	"process_cpu_seconds_system_total":              "CPU seconds the sidecar's process used in the kernel.",
	"process_major_pagefaults_total":                "Page faults of the sidecar's process that needed a read from disk.",
	"process_minor_pagefaults_total":                "Page faults of the sidecar's process served from memory.",
	"process_num_threads":                           "Threads of the sidecar's process.",
	"process_resident_memory_bytes":                 "Resident memory of the sidecar's process (not the bridge's), in bytes.",
	"process_resident_memory_peak_bytes":            "Highest resident memory of the sidecar's process so far, in bytes.",
	"process_resident_memory_anon_bytes":            "Resident anonymous memory of the sidecar's process, in bytes.",
	"process_resident_memory_file_bytes":            "Resident file-backed memory of the sidecar's process, in bytes.",
	"process_resident_memory_shared_bytes":          "Resident shared memory of the sidecar's process, in bytes.",
	"process_virtual_memory_bytes":                  "Virtual memory of the sidecar's process, in bytes.",
	"process_virtual_memory_peak_bytes":             "Highest virtual memory of the sidecar's process so far, in bytes.",
	"process_start_time_seconds":                    "When the sidecar's process started, in seconds since the Unix epoch.",
	"process_open_fds":                              "File descriptors the sidecar's process has open.",
	"process_max_fds":                               "The most file descriptors the sidecar's process may open (RLIMIT_NOFILE).",
	"process_io_read_bytes_total":                   "Bytes the sidecar's process read, from any source.",
	"process_io_written_bytes_total":                "Bytes the sidecar's process wrote, to any destination.",
	"process_io_read_syscalls_total":                "Read system calls of the sidecar's process.",
	"process_io_write_syscalls_total":               "Write system calls of the sidecar's process.",
	"process_io_storage_read_bytes_total":           "Bytes the sidecar's process read from storage.",
	"process_io_storage_written_bytes_total":        "Bytes the sidecar's process wrote to storage.",
	"process_pressure_cpu_waiting_seconds_total":    "Seconds some tasks of the sidecar's cgroup waited for CPU (pressure stall information).",
	"process_pressure_cpu_stalled_seconds_total":    "Seconds all tasks of the sidecar's cgroup were stalled on CPU (pressure stall information).",
	"process_pressure_io_waiting_seconds_total":     "Seconds some tasks of the sidecar's cgroup waited for I/O (pressure stall information).",
	"process_pressure_io_stalled_seconds_total":     "Seconds all tasks of the sidecar's cgroup were stalled on I/O (pressure stall information).",
	"process_pressure_memory_waiting_seconds_total": "Seconds some tasks of the sidecar's cgroup waited for memory (pressure stall information).",
	"process_pressure_memory_stalled_seconds_total": "Seconds all tasks of the sidecar's cgroup were stalled on memory (pressure stall information).",
	"process_cgroup_cpu_throttled_seconds_total":    "Seconds the sidecar's cgroup was throttled by its CPU limit.",
}

// fallbackHelp is for a library metric this table does not know yet
// (one a newer library or Go adds), so no # HELP line is ever empty.
func fallbackHelp(name string) string {
	if strings.HasPrefix(name, "process_") {
		return "A measure of the sidecar's own process, as the VictoriaMetrics/metrics library reports it."
	}
	return "A measure of the sidecar's Go runtime, as the VictoriaMetrics/metrics library reports it."
}

// helpText copies the text format in src to dst with each bare
// "# HELP name" line completed by the family's help text.
func helpText(dst *bytes.Buffer, src []byte) {
	for len(src) > 0 {
		line, rest, _ := bytes.Cut(src, []byte("\n"))
		src = rest
		if name, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok && !bytes.ContainsRune(name, ' ') {
			text, known := help[string(name)]
			if !known {
				text = fallbackHelp(string(name))
			}
			dst.Write(line)
			dst.WriteByte(' ')
			dst.WriteString(helpEscaper.Replace(text))
			dst.WriteByte('\n')
			continue
		}
		dst.Write(line)
		dst.WriteByte('\n')
	}
}

// helpEscaper escapes a help text as the text format wants it.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
