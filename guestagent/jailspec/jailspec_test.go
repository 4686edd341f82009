package jailspec

import (
	"os"
	"testing"
)

func TestFilesByName(t *testing.T) {
	a, b := os.NewFile(100, "a"), os.NewFile(101, "b")
	got := Files(map[FD]*os.File{FDExe: a, FDListener: b})
	if len(got) != 3 || got[0] != b || got[1] != nil || got[2] != a {
		t.Fatalf("Files = %v", got)
	}
	if FDListener != 3 || FDSync != 4 || FDExe != 5 || FDWork != 6 || FDWorkBack != 7 {
		t.Fatal("descriptor numbers changed: old agents in built images expect these")
	}
}

// TestExtraFilesRefusesUnknownNumbers: a descriptor outside the contract's
// range is a programming error, never a silently shifted slice.
func TestExtraFilesRefusesUnknownNumbers(t *testing.T) {
	for _, fd := range []FD{0, 2, fdEnd, fdEnd + 5} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("descriptor %d accepted", fd)
				}
			}()
			ExtraFiles(fdEnd, map[FD]*os.File{fd: os.Stdin})
		}()
	}
}
