package engine

import (
	"sync/atomic"
	"unsafe"
)

// slotsView is what a reader without the shard's lock may know of a
// table's slot array: where it starts and how many slots it has. It serves
// prefetching only: a view made stale by a resize names memory the table no
// longer uses, and a prefetch of it is a wasted hint, never a fault (the
// instruction does not fault, and base is an integer the collector does not
// follow).
type slotsView struct {
	base  uintptr
	n     uint64
	shift uint
}

// tableView is published by a table at each resize.
type tableView struct{ p atomic.Pointer[slotsView] }

func (v *tableView) publish(slots []slot, shift uint) {
	v.p.Store(&slotsView{base: uintptr(unsafe.Pointer(unsafe.SliceData(slots))), n: uint64(len(slots)), shift: shift})
}

// prefetch asks the CPU to start loading the home slot of k, so that the
// lookup after the other work of a batch finds it in cache: at a few
// million triplets the table is far larger than the caches and the home
// slot is a miss, a quarter of a decision's time in the server's profile.
func (v *tableView) prefetch(k uint64) {
	s := v.p.Load()
	if s == nil {
		return
	}
	prefetchLine(s.base + uintptr(homeSlot(fixKey(k), s.shift, s.n))*unsafe.Sizeof(slot{}))
}
