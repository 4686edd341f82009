package proc

import "testing"

func TestStatFieldsOddNames(t *testing.T) {
	f, err := statFields("123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20")
	if err != nil || f[0] != "S" || f[19] != "999" {
		t.Fatalf("%v %v", f, err)
	}
	if _, err := statFields("garbage"); err == nil {
		t.Fatal("accepted garbage")
	}
}
