// Command pause is the sandbox ("pause") container of the e2e cluster.
//
// No registry is reachable from the test machine, so the kubelet's usual
// pause image cannot be pulled; this is the whole of what a sandbox process
// has to do: hold the pod's namespaces open, reap children when it is PID 1,
// and exit promptly on SIGINT/SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
