// Package appservice owns application-service registrations: reading the
// registration files, checking them against each other and against the
// server's existing users, and answering which appservice a user ID, room
// alias or room ID belongs to. The transaction pusher (pusher.go) feeds each one its events.
//
// A Registry is an immutable snapshot: a reload builds a new one with Load
// and swaps it in atomically, so readers never lock and a reload never
// touches what hangs off the old snapshot (queues, connections).
package appservice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// Dir is the directory inside the data directory whose *.yaml files are
// registrations: those `switchboard appservice add` copies there and those
// Switchboard generates for its own components.
const Dir = "appservices"

// Error is a problem with one registration file, naming the file and the
// field (dotted, as written in the file: "namespaces.users[0].regex").
type Error struct {
	File    string // as the operator can open it: DATA/appservices/irc.yaml
	Field   string // empty for problems with the whole file
	Problem string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.File + ": " + e.Problem
	}
	return e.File + ": " + e.Field + ": " + e.Problem
}

// File is one registration file to load.
type File struct {
	Path string // where to read it
	Name string // how messages name it (usually Path)
	// ConfigKey is "appservice_registrations[N]" for a file listed in
	// switchboard.yaml, so a missing file names the key that lists it.
	ConfigKey string
}

// Files lists the registration files of a data directory: every *.yaml in
// DATA/appservices/ (sorted; hidden files, such as editors' and `add`'s
// temporary files, are skipped), then extraFiles (the config key
// appservice_registrations, relative to dataDir unless absolute). A listed
// file that is also in DATA/appservices/ is read once.
func Files(dataDir string, extraFiles []string) ([]File, error) {
	dir := filepath.Join(dataDir, Dir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var files []File
	seen := map[string]bool{}
	for _, e := range entries { // ReadDir sorts by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		p := filepath.Join(dir, name)
		files = append(files, File{Path: p, Name: p})
		seen[absPath(p)] = true
	}
	for i, f := range extraFiles {
		p := f
		if !filepath.IsAbs(p) {
			p = filepath.Join(dataDir, p)
		}
		if seen[absPath(p)] {
			continue
		}
		seen[absPath(p)] = true
		files = append(files, File{Path: p, Name: p, ConfigKey: fmt.Sprintf("appservice_registrations[%d]", i)})
	}
	return files, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// namespace is one compiled entry of a registration's namespaces.
type namespace struct {
	field     string // "namespaces.users[0]"
	regex     string // as written
	exclusive bool
	re        *regexp.Regexp // anchored at the start, like Synapse
	parsed    *syntax.Regexp // for the overlap heuristic
}

func (ns *namespace) match(s string) bool { return ns.re.MatchString(s) }

// AppService is one loaded, validated registration. It belongs to an
// immutable Registry: do not modify it or its Registration.
type AppService struct {
	Registration *appservice.Registration
	File         string // the file it came from, as Error names it

	users, aliases, rooms []namespace
	sender                id.UserID
	serverName            string
}

// ID is the registration's id.
func (as *AppService) ID() string { return as.Registration.ID }

// SenderUserID is the appservice's own user, @sender_localpart:serverName.
func (as *AppService) SenderUserID(serverName string) id.UserID {
	return id.NewUserID(as.Registration.SenderLocalpart, serverName)
}

// RateLimited says whether requests from users the appservice masquerades
// as are rate-limited (the registration's rate_limited, default true; the
// sender is never limited).
func (as *AppService) RateLimited() bool {
	return as.Registration.RateLimited == nil || *as.Registration.RateLimited
}

func (as *AppService) isLocal(userID id.UserID) bool {
	_, server, err := userID.Parse()
	return err == nil && server == as.serverName
}

// IsInterestedInUser reports whether userID is the appservice's sender or a
// local user matching one of its user namespaces. Users of other servers
// never match a user namespace (spec: "can only register interest in local
// users").
func (as *AppService) IsInterestedInUser(userID id.UserID) bool {
	if userID == as.sender {
		return true
	}
	return as.isLocal(userID) && matchAny(as.users, string(userID), false) != nil
}

// IsExclusiveUser reports whether the appservice alone may manage userID:
// its sender, or a local user in one of its exclusive user namespaces.
func (as *AppService) IsExclusiveUser(userID id.UserID) bool {
	if userID == as.sender {
		return true
	}
	return as.isLocal(userID) && matchAny(as.users, string(userID), true) != nil
}

// IsInterestedInAlias reports whether alias matches an alias namespace.
func (as *AppService) IsInterestedInAlias(alias id.RoomAlias) bool {
	return matchAny(as.aliases, string(alias), false) != nil
}

// IsExclusiveAlias reports whether alias is in an exclusive alias namespace.
func (as *AppService) IsExclusiveAlias(alias id.RoomAlias) bool {
	return matchAny(as.aliases, string(alias), true) != nil
}

// IsInterestedInRoomID reports whether roomID matches a room namespace.
func (as *AppService) IsInterestedInRoomID(roomID id.RoomID) bool {
	return matchAny(as.rooms, string(roomID), false) != nil
}

func matchAny(nss []namespace, s string, exclusiveOnly bool) *namespace {
	for i := range nss {
		if (!exclusiveOnly || nss[i].exclusive) && nss[i].match(s) {
			return &nss[i]
		}
	}
	return nil
}

// Registry is an immutable snapshot of every loaded registration. A nil
// *Registry is an empty one.
type Registry struct {
	all       []*AppService // sorted by ID
	byID      map[string]*AppService
	byASToken map[[sha256.Size]byte]*AppService
}

// All returns every appservice, sorted by ID. The slice is shared: do not
// modify it.
func (r *Registry) All() []*AppService {
	if r == nil {
		return nil
	}
	return r.all
}

// ByID returns the appservice with this registration id, or nil.
func (r *Registry) ByID(asID string) *AppService {
	if r == nil {
		return nil
	}
	return r.byID[asID]
}

// ByASToken returns the appservice whose as_token this is, or nil.
//
// The lookup is keyed by the token's SHA-256 digest, never by the token:
// how long the map lookup takes can depend only on the digest, and an
// attacker who cannot invert SHA-256 learns nothing about a real token from
// it (the same reasoning as comparing digests with a constant-time compare,
// without a pass over every registration per request).
func (r *Registry) ByASToken(token string) *AppService {
	if r == nil || token == "" {
		return nil
	}
	return r.byASToken[sha256.Sum256([]byte(token))]
}

// ExclusiveOwnerOfUser returns the appservice that alone may manage userID
// (its sender or a local user in its exclusive namespace), or nil.
func (r *Registry) ExclusiveOwnerOfUser(userID id.UserID) *AppService {
	for _, as := range r.All() {
		if as.IsExclusiveUser(userID) {
			return as
		}
	}
	return nil
}

// ExclusiveOwnerOfAlias returns the appservice whose exclusive alias
// namespace holds alias, or nil.
func (r *Registry) ExclusiveOwnerOfAlias(alias id.RoomAlias) *AppService {
	for _, as := range r.All() {
		if as.IsExclusiveAlias(alias) {
			return as
		}
	}
	return nil
}

// Load reads and validates the registrations of a data directory (see
// Files) and returns the snapshot; LoadFiles does the work.
func Load(ctx context.Context, dataDir string, extraFiles []string, serverName string,
	existingUsers func(context.Context) ([]id.UserID, error), isOwnedBy func(userID id.UserID, asID string) bool) (*Registry, error) {
	files, err := Files(dataDir, extraFiles)
	if err != nil {
		return nil, err
	}
	return LoadFiles(ctx, files, serverName, existingUsers, isOwnedBy)
}

// LoadFiles reads and validates registration files and returns the
// snapshot. It writes nothing and keeps no state, so a reload may call it
// at any time. The first problem found is returned as an *Error naming the
// file and field (secrets are never quoted); in order:
//
//   - each file: a YAML mapping; id, as_token, hs_token and a valid
//     sender_localpart set; url null, empty (no transactions are sent) or an
//     absolute http(s) URL; as_token ≠ hs_token; every namespace entry has a
//     regex that compiles (RE2 syntax, matched from the start of the ID) and a
//     boolean exclusive;
//   - across files: id, sender and every token unique (an as_token may not
//     be another registration's hs_token either);
//   - exclusive namespaces of different appservices do not overlap, and no
//     appservice's sender lies in another's exclusive user namespace (see
//     findOverlap for how far "do not overlap" is checked);
//   - no user returned by existingUsers lies in an exclusive user namespace,
//     unless it is that appservice's sender or isOwnedBy(user, id) says the
//     appservice created it. existingUsers should return the local accounts
//     that count (the caller leaves out deactivated ones); nil skips the
//     check. isOwnedBy may be nil while the server does not yet record which
//     appservice registered a user: then every matching user is an error,
//     including ghosts an appservice registered itself, so the caller must
//     supply isOwnedBy before appservices can register users.
//
// The cost is one pass over the files, a few hundred regex matches per pair
// of exclusive namespaces, and one match per existing user and exclusive
// user namespace.
func LoadFiles(ctx context.Context, files []File, serverName string,
	existingUsers func(context.Context) ([]id.UserID, error), isOwnedBy func(userID id.UserID, asID string) bool) (*Registry, error) {
	var all []*AppService
	for _, f := range files {
		as, err := loadFile(f, serverName)
		if err != nil {
			return nil, err
		}
		all = append(all, as)
	}
	if err := checkUnique(all); err != nil {
		return nil, err
	}
	if err := checkOverlaps(all, serverName); err != nil {
		return nil, err
	}
	if existingUsers != nil && len(all) > 0 {
		users, err := existingUsers(ctx)
		if err != nil {
			return nil, fmt.Errorf("list existing users: %w", err)
		}
		if err := checkCaptures(all, users, isOwnedBy); err != nil {
			return nil, err
		}
	}
	r := &Registry{
		byID:      make(map[string]*AppService, len(all)),
		byASToken: make(map[[sha256.Size]byte]*AppService, len(all)),
	}
	r.all = append([]*AppService(nil), all...)
	sort.Slice(r.all, func(i, j int) bool { return r.all[i].ID() < r.all[j].ID() })
	for _, as := range r.all {
		r.byID[as.ID()] = as
		r.byASToken[sha256.Sum256([]byte(as.Registration.AppToken))] = as
	}
	return r, nil
}

func loadFile(f File, serverName string) (*AppService, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		problem := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			problem = pe.Err.Error()
		}
		if f.ConfigKey != "" {
			return nil, &Error{File: f.Name, Problem: fmt.Sprintf("cannot read the file listed in %s: %s", f.ConfigKey, problem)}
		}
		return nil, &Error{File: f.Name, Problem: "cannot read: " + problem}
	}
	as, err := parse(data, serverName)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = f.Name
			return nil, e
		}
		return nil, &Error{File: f.Name, Problem: err.Error()}
	}
	as.File = f.Name
	return as, nil
}

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Field: field, Problem: fmt.Sprintf(format, args...)}
}

var yamlLine = regexp.MustCompile(`^yaml: (?:unmarshal errors:\n\s*)?`)

// parse decodes one registration into mautrix's Registration after checking
// the shape of the YAML, so a wrong type or a missing field is reported by
// its name rather than by yaml's Go-flavoured message.
func parse(data []byte, serverName string) (*AppService, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Problem: yamlLine.ReplaceAllString(err.Error(), "")}
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null") {
		return nil, &Error{Problem: "the file is empty (a registration needs id, url, as_token, hs_token, sender_localpart and namespaces)"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{Problem: "not a YAML mapping (a registration is id: …, url: …, as_token: …, and so on)"}
	}
	if err := checkShape(root); err != nil {
		return nil, err
	}
	reg := &appservice.Registration{}
	if err := root.Decode(reg); err != nil {
		return nil, &Error{Problem: yamlLine.ReplaceAllString(err.Error(), "")}
	}

	for _, f := range []struct{ name, value string }{
		{"id", reg.ID}, {"as_token", reg.AppToken}, {"hs_token", reg.ServerToken}, {"sender_localpart", reg.SenderLocalpart},
	} {
		if strings.TrimSpace(f.value) == "" {
			return nil, fieldErr(f.name, "must be set")
		}
	}
	if reg.AppToken == reg.ServerToken {
		return nil, fieldErr("hs_token", "must differ from as_token")
	}
	if err := id.ValidateUserLocalpart(reg.SenderLocalpart); err != nil {
		return nil, fieldErr("sender_localpart", "%q is not a valid localpart (only a-z, 0-9 and . _ = - / +)", reg.SenderLocalpart)
	}
	sender := id.NewUserID(reg.SenderLocalpart, serverName)
	if len(sender) > 255 {
		return nil, fieldErr("sender_localpart", "the user ID %s would be longer than 255 bytes", sender)
	}
	if reg.URL != "" {
		if u, err := url.Parse(reg.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fieldErr("url", "%q must be an absolute http:// or https:// URL, or null for an appservice that receives no transactions", reg.URL)
		}
	}
	as := &AppService{Registration: reg, sender: sender, serverName: serverName}
	var err error
	if as.users, err = compile("users", reg.Namespaces.UserIDs); err != nil {
		return nil, err
	}
	if as.aliases, err = compile("aliases", reg.Namespaces.RoomAliases); err != nil {
		return nil, err
	}
	if as.rooms, err = compile("rooms", reg.Namespaces.RoomIDs); err != nil {
		return nil, err
	}
	return as, nil
}

// checkShape checks the types of the fields we read and that every
// namespace entry has regex and exclusive (both required by the spec: a
// misspelt "exclusive" would otherwise silently make a namespace shared).
// Other top-level keys (protocols, extensions such as
// de.sorunome.msc2409.push_ephemeral) are left to the decoder.
func checkShape(root *yaml.Node) error {
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, v := root.Content[i].Value, root.Content[i+1]
		switch key {
		case "id", "url", "as_token", "hs_token", "sender_localpart":
			if v.Kind != yaml.ScalarNode {
				return fieldErr(key, "expected a string (line %d)", v.Line)
			}
		case "rate_limited", "receive_ephemeral", "org.matrix.msc3202":
			if !isNull(v) && !isBool(v) {
				return fieldErr(key, "expected true or false (line %d)", v.Line)
			}
		case "namespaces":
			if isNull(v) {
				continue
			}
			if v.Kind != yaml.MappingNode {
				return fieldErr(key, "expected a mapping with users, aliases and rooms (line %d)", v.Line)
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				kind, list := v.Content[j].Value, v.Content[j+1]
				field := "namespaces." + kind
				switch kind {
				case "users", "aliases", "rooms":
				default:
					return fieldErr(field, "unknown namespace (line %d); the namespaces are users, aliases and rooms", v.Content[j].Line)
				}
				if isNull(list) {
					continue
				}
				if list.Kind != yaml.SequenceNode {
					return fieldErr(field, "expected a list of {regex: …, exclusive: …} (line %d)", list.Line)
				}
				for n, entry := range list.Content {
					ef := fmt.Sprintf("%s[%d]", field, n)
					if entry.Kind != yaml.MappingNode {
						return fieldErr(ef, "expected {regex: …, exclusive: true or false} (line %d)", entry.Line)
					}
					var haveRegex, haveExclusive bool
					for k := 0; k+1 < len(entry.Content); k += 2 {
						switch ev := entry.Content[k+1]; entry.Content[k].Value {
						case "regex":
							if ev.Kind != yaml.ScalarNode || isNull(ev) || ev.Value == "" {
								return fieldErr(ef+".regex", "expected a regular expression (line %d)", ev.Line)
							}
							haveRegex = true
						case "exclusive":
							if !isBool(ev) {
								return fieldErr(ef+".exclusive", "expected true or false (line %d)", ev.Line)
							}
							haveExclusive = true
						}
					}
					if !haveRegex {
						return fieldErr(ef+".regex", "missing (line %d)", entry.Line)
					}
					if !haveExclusive {
						return fieldErr(ef+".exclusive", "missing: say true or false (line %d)", entry.Line)
					}
				}
			}
		}
	}
	return nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func isBool(n *yaml.Node) bool {
	var b bool
	return n.Kind == yaml.ScalarNode && !isNull(n) && n.Decode(&b) == nil
}

func compile(kind string, list appservice.NamespaceList) ([]namespace, error) {
	out := make([]namespace, 0, len(list))
	for i, ns := range list {
		field := fmt.Sprintf("namespaces.%s[%d]", kind, i)
		parsed, err := syntax.Parse(ns.Regex, syntax.Perl)
		if err != nil {
			return nil, fieldErr(field+".regex", "%v", &regexpError{err})
		}
		// Anchored at the start only, as Synapse matches (Python's
		// re.match): registrations written for it, such as
		// "@telegram_[0-9]+" without a server part, must work unchanged.
		re, err := regexp.Compile(`^(?:` + ns.Regex + `)`)
		if err != nil {
			return nil, fieldErr(field+".regex", "%v", &regexpError{err})
		}
		out = append(out, namespace{field: field, regex: ns.Regex, exclusive: ns.Exclusive, re: re, parsed: parsed})
	}
	return out, nil
}

// regexpError prints like regexp.Compile's errors ("error parsing regexp: …").
type regexpError struct{ err error }

func (e *regexpError) Error() string {
	msg := e.err.Error()
	if !strings.HasPrefix(msg, "error parsing regexp") {
		msg = "error parsing regexp: " + msg
	}
	return msg
}

// checkUnique enforces unique ids, senders and tokens. Messages name the
// other file but never the token.
func checkUnique(all []*AppService) error {
	type owner struct {
		file, field string
	}
	ids := map[string]string{}
	senders := map[id.UserID]string{}
	tokens := map[[sha256.Size]byte]owner{}
	for _, as := range all {
		if other, dup := ids[as.ID()]; dup {
			return &Error{File: as.File, Field: "id", Problem: fmt.Sprintf("%q is already the id of %s", as.ID(), other)}
		}
		ids[as.ID()] = as.File
		if other, dup := senders[as.sender]; dup {
			return &Error{File: as.File, Field: "sender_localpart", Problem: fmt.Sprintf("%s is already the sender of %s", as.sender, other)}
		}
		senders[as.sender] = as.File
		for _, t := range []struct{ field, token string }{{"as_token", as.Registration.AppToken}, {"hs_token", as.Registration.ServerToken}} {
			digest := sha256.Sum256([]byte(t.token))
			if other, dup := tokens[digest]; dup {
				return &Error{File: as.File, Field: t.field, Problem: fmt.Sprintf("the same token is the %s of %s; every as_token and hs_token must be unique", other.field, other.file)}
			}
			tokens[digest] = owner{as.File, t.field}
		}
	}
	return nil
}

// checkOverlaps rejects exclusive namespaces of different appservices that
// share an ID, and senders inside another appservice's exclusive users.
func checkOverlaps(all []*AppService, serverName string) error {
	samples := map[*namespace][]string{}
	for _, kind := range []string{"users", "aliases", "rooms"} {
		type owned struct {
			as *AppService
			ns *namespace
		}
		var excl []owned
		for _, as := range all {
			nss := as.users
			switch kind {
			case "aliases":
				nss = as.aliases
			case "rooms":
				nss = as.rooms
			}
			for i := range nss {
				if nss[i].exclusive {
					excl = append(excl, owned{as, &nss[i]})
				}
			}
		}
		for j := range excl {
			for i := 0; i < j; i++ {
				a, b := excl[i], excl[j]
				if a.as == b.as {
					continue
				}
				if a.ns.regex == b.ns.regex {
					return &Error{File: b.as.File, Field: b.ns.field + ".regex", Problem: fmt.Sprintf(
						"exclusive namespace %#q is also an exclusive namespace of %s (%s)", b.ns.regex, a.as.File, a.ns.field)}
				}
				if witness, ok := findOverlap(a.ns, b.ns, serverName, samples); ok {
					return &Error{File: b.as.File, Field: b.ns.field + ".regex", Problem: fmt.Sprintf(
						"exclusive namespace %#q overlaps the exclusive namespace %#q of %s (%s): both match %q",
						b.ns.regex, a.ns.regex, a.as.File, a.ns.field, witness)}
				}
			}
		}
	}
	for _, a := range all {
		for _, b := range all {
			if a == b {
				continue
			}
			if ns := matchAny(b.users, string(a.sender), true); ns != nil {
				return &Error{File: a.File, Field: "sender_localpart", Problem: fmt.Sprintf(
					"the sender %s is inside the exclusive user namespace %#q of %s (%s)", a.sender, ns.regex, b.File, ns.field)}
			}
		}
	}
	return nil
}

// checkCaptures rejects exclusive user namespaces that hold existing users
// the appservice did not create.
func checkCaptures(all []*AppService, users []id.UserID, isOwnedBy func(id.UserID, string) bool) error {
	for _, as := range all {
		for i := range as.users {
			ns := &as.users[i]
			if !ns.exclusive {
				continue
			}
			var captured []id.UserID
			for _, u := range users {
				if u == as.sender || !as.isLocal(u) || !ns.match(string(u)) {
					continue
				}
				if isOwnedBy != nil && isOwnedBy(u, as.ID()) {
					continue
				}
				captured = append(captured, u)
			}
			if len(captured) == 0 {
				continue
			}
			more := ""
			if len(captured) > 1 {
				more = fmt.Sprintf(" (and %d more)", len(captured)-1)
			}
			return &Error{File: as.File, Field: ns.field + ".regex", Problem: fmt.Sprintf(
				"exclusive namespace %#q captures the existing user %s%s; an exclusive user namespace may only hold users the appservice creates",
				ns.regex, captured[0], more)}
		}
	}
	return nil
}

// findOverlap looks for an ID matched by both namespaces and returns it.
//
// Whether two regular expressions share a string is decidable (intersect
// the automata) but not cheaply with Go's regexp, so this is a heuristic
// that errs one way only: every overlap it reports is real (the witness
// string matched both compiled regexes), but it can miss one. It tries
//
//  1. identical regex strings (overlapping whenever they match anything);
//  2. strings generated from each regex's syntax tree (each literal, a few
//     representative characters of each class, 0, 1 and 2 repetitions of
//     each loop, every alternative; at most maxSamples per regex), as
//     they are and with ":"+serverName and "x:"+serverName appended, so
//     "@_irc_.*" meets "@.*:example\.org";
//  3. one regex's literal prefix joined, through a short middle ("", "x",
//     "0", ":"+serverName, "x:"+serverName), to the other's literal suffix.
//
// It misses overlaps that need a string none of these produce, for
// example "@a[0-9]b.*" and "@a5.*" ("@a5b" is in both, but the samples
// pick "0" from the class and nothing puts "b" after "@a5"). The spec's
// advice of distinct prefixes per appservice ("@_irc_", "@_slack_") is
// what makes real registrations safe; this check catches the usual
// mistakes: the same namespace twice, and a catch-all beside a specific one.
func findOverlap(a, b *namespace, serverName string, cache map[*namespace][]string) (string, bool) {
	sa, sb := cachedSamples(a, cache), cachedSamples(b, cache)
	both := func(s string) bool { return a.match(s) && b.match(s) }
	if a.regex == b.regex {
		for _, s := range sa {
			if a.match(s) {
				return s, true
			}
		}
		return "", true // no witness found, but the same regex is the same set
	}
	var cands []string
	for _, s := range append(append([]string(nil), sa...), sb...) {
		cands = append(cands, s, s+":"+serverName, s+"x:"+serverName)
	}
	pa, xa := affixes(a.parsed)
	pb, xb := affixes(b.parsed)
	for _, m := range []string{"", "x", "0", ":" + serverName, "x:" + serverName} {
		cands = append(cands, pa+m+xb, pb+m+xa, pa+m, pb+m)
	}
	var best string
	found := false
	for _, s := range cands {
		if both(s) && (!found || len(s) < len(best)) {
			best, found = s, true
		}
	}
	return best, found
}

func cachedSamples(ns *namespace, cache map[*namespace][]string) []string {
	if s, ok := cache[ns]; ok {
		return s
	}
	s := samples(ns.parsed)
	cache[ns] = s
	return s
}

// maxSamples bounds the strings generated per regex (and per sub-expression).
const maxSamples = 32

// samples returns up to maxSamples strings the regex is likely to match,
// shortest choices first. Anchors and word boundaries are treated as empty,
// so a sample may not match: findOverlap checks every candidate against the
// compiled regexes.
func samples(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpNoMatch:
		return nil
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return []string{""}
	case syntax.OpLiteral:
		s := string(re.Rune)
		if re.Flags&syntax.FoldCase != 0 {
			return dedupe([]string{strings.ToLower(s), s})
		}
		return []string{s}
	case syntax.OpCharClass:
		return classSamples(re.Rune)
	case syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return []string{"x", "0"}
	case syntax.OpCapture:
		return samples(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		sub := samples(re.Sub[0])
		var out []string
		if re.Op != syntax.OpPlus {
			out = append(out, "")
		}
		if re.Op == syntax.OpQuest || len(sub) == 0 {
			return dedupe(append(out, sub...))
		}
		out = append(out, sub...)
		return capped(dedupe(append(out, sub[0]+sub[0])))
	case syntax.OpRepeat:
		if re.Min > 64 {
			return nil // give up: no registration needs this, and the check only loses a witness
		}
		sub := samples(re.Sub[0])
		if len(sub) == 0 {
			if re.Min == 0 {
				return []string{""}
			}
			return nil
		}
		var out []string
		for _, s := range sub {
			out = append(out, strings.Repeat(s, re.Min))
		}
		if re.Max == -1 || re.Max > re.Min {
			out = append(out, strings.Repeat(sub[0], re.Min+1))
		}
		return capped(dedupe(out))
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			ss := samples(sub)
			if len(ss) == 0 {
				return nil
			}
			var next []string
			for _, a := range out {
				for _, b := range ss {
					next = append(next, a+b)
					if len(next) >= maxSamples {
						break
					}
				}
				if len(next) >= maxSamples {
					break
				}
			}
			out = next
		}
		return dedupe(out)
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			out = append(out, samples(sub)...)
		}
		return capped(dedupe(out))
	}
	return nil
}

// classSamples picks characters of a class, preferring ones common in
// Matrix IDs, so that two classes are likely to share a pick.
func classSamples(ranges []rune) []string {
	var out []string
	in := func(r rune) bool {
		for i := 0; i+1 < len(ranges); i += 2 {
			if ranges[i] <= r && r <= ranges[i+1] {
				return true
			}
		}
		return false
	}
	for _, r := range "xa0_-.=/+:z9" {
		if in(r) {
			out = append(out, string(r))
			if len(out) == 3 {
				return out
			}
		}
	}
	if len(out) == 0 && len(ranges) >= 2 {
		out = append(out, string(ranges[0]))
	}
	return out
}

// affixes returns the literal text a regex must start and end with, as far
// as its top-level concatenation shows.
func affixes(re *syntax.Regexp) (prefix, suffix string) {
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	literal := func(r *syntax.Regexp) (string, bool) {
		if r.Op == syntax.OpLiteral && r.Flags&syntax.FoldCase == 0 {
			return string(r.Rune), true
		}
		return "", false
	}
	if s, ok := literal(re); ok {
		return s, s
	}
	if re.Op != syntax.OpConcat {
		return "", ""
	}
	subs := re.Sub
	for len(subs) > 0 && (subs[0].Op == syntax.OpBeginText || subs[0].Op == syntax.OpBeginLine) {
		subs = subs[1:]
	}
	for len(subs) > 0 && (subs[len(subs)-1].Op == syntax.OpEndText || subs[len(subs)-1].Op == syntax.OpEndLine) {
		subs = subs[:len(subs)-1]
	}
	var p, s bytes.Buffer
	for _, sub := range subs {
		lit, ok := literal(sub)
		if !ok {
			break
		}
		p.WriteString(lit)
	}
	var tail []string
	for i := len(subs) - 1; i >= 0; i-- {
		lit, ok := literal(subs[i])
		if !ok {
			break
		}
		tail = append([]string{lit}, tail...)
	}
	for _, t := range tail {
		s.WriteString(t)
	}
	return p.String(), s.String()
}

func dedupe(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func capped(ss []string) []string {
	if len(ss) > maxSamples {
		return ss[:maxSamples]
	}
	return ss
}
