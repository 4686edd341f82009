package cli

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

// TestEnginesRegistry: the engines come from the build-tagged files in
// "auto" order, --engine picks one, and an engine this build lacks or an
// unknown name is a usage error that says which.
func TestEnginesRegistry(t *testing.T) {
	home := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	all, err := engines(home, log, "auto")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range all {
		names = append(names, e.Name())
	}
	want := []string{"qemu", "jail"} // Linux
	if _, ok := engineMakers["krun"]; ok {
		want = append([]string{"krun"}, want...)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("auto engines %v, want %v", names, want)
	}
	for _, n := range want {
		one, err := engines(home, log, n)
		if err != nil || len(one) != 1 || one[0].Name() != n {
			t.Fatalf("--engine %s: %v, %v", n, one, err)
		}
	}
	var ue usageError
	if _, err := engines(home, log, "bogus"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "want auto") {
		t.Fatalf("--engine bogus: %v", err)
	}
	qemu := engineMakers["qemu"]
	delete(engineMakers, "qemu")
	t.Cleanup(func() { engineMakers["qemu"] = qemu })
	if _, err := engines(home, log, "qemu"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "has no qemu engine") {
		t.Fatalf("--engine qemu without it: %v", err)
	}
}
