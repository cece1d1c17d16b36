package anomaly

import "strconv"

// Labels a usage alert carries about the tenant's heaviest user in the
// window that fired (absent when the tenant's events name no user_id).
const (
	LabelTopUser       = "top_user"        // the user_id with the most events in the window
	LabelTopUserEvents = "top_user_events" // that user's events in the window (an upper bound; see topUsers)
	LabelWindowEvents  = "window_events"   // all the tenant's events in the window
)

// userCount is one tracked user of a window: its id (the bytes are reused
// when another user takes the slot, so tracking allocates only while the
// ids grow) and its count.
type userCount struct {
	id []byte
	n  uint32
}

// topUsers tracks the heaviest users of one tenant in one window with the
// space-saving algorithm: at most k counters; a user not tracked takes the
// smallest counter's slot and its count plus one. Every user with more
// than 1/k of the window's events is tracked, and a count overstates the
// user's events by at most the smallest count. Memory per tenant: two
// windows of k entries of 32 bytes plus the ids' bytes (at most 256 each).
type topUsers struct {
	e []userCount
}

func (u *topUsers) add(id string, k int) {
	for i := range u.e {
		if string(u.e[i].id) == id {
			u.e[i].n++
			return
		}
	}
	if len(u.e) < k {
		if len(u.e) < cap(u.e) {
			u.e = u.e[:len(u.e)+1]
		} else {
			u.e = append(u.e, userCount{})
		}
		last := &u.e[len(u.e)-1]
		last.id, last.n = append(last.id[:0], id...), 1
		return
	}
	mi := 0
	for i := range u.e {
		if u.e[i].n < u.e[mi].n {
			mi = i
		}
	}
	u.e[mi].id = append(u.e[mi].id[:0], id...)
	u.e[mi].n++
}

// top returns the heaviest tracked user and its count.
func (u *topUsers) top() (string, uint32) {
	var best *userCount
	for i := range u.e {
		if best == nil || u.e[i].n > best.n {
			best = &u.e[i]
		}
	}
	if best == nil {
		return "", 0
	}
	return string(best.id), best.n
}

func (u *topUsers) reset() { u.e = u.e[:0] }

// heavyUser is the heaviest user of the last window a usage alert looked
// at, and the window's events.
type heavyUser struct {
	id            string
	events, total uint32
}

// observeUser counts user in slot i of t, when top users are tracked.
func (t *tenant) observeUser(user string, i, k int) {
	if k <= 0 || user == "" {
		return
	}
	if t.users == nil {
		t.users = new([2]topUsers)
	}
	t.users[i].add(user, k)
}

// snapUser records the heaviest user of slot i, with total events in the
// window, for the usage alerts built next.
func (t *tenant) snapUser(i int, total uint32) {
	t.heavy = heavyUser{}
	if t.users == nil {
		return
	}
	if id, n := t.users[i].top(); id != "" {
		t.heavy = heavyUser{id: id, events: n, total: total}
	}
}

// resetUsers forgets slot i's users.
func (t *tenant) resetUsers(i int) {
	if t.users != nil {
		t.users[i].reset()
	}
}

// addLabels adds the heavy-user labels to a usage alert's labels.
func (h heavyUser) addLabels(labels map[string]string) {
	if h.id == "" {
		return
	}
	labels[LabelTopUser] = h.id
	labels[LabelTopUserEvents] = strconv.FormatUint(uint64(h.events), 10)
	labels[LabelWindowEvents] = strconv.FormatUint(uint64(h.total), 10)
}
