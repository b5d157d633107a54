package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Command is a bot command: "!name args" (or "!name sub args" with
// Subcommands).
type Command struct {
	Name string
	// Usage describes the arguments, e.g. "<duration> <text>"; it appears
	// in help and in the answer to wrong arguments.
	Usage string
	Help  string
	// MinArgs and MaxArgs bound the argument count (MaxArgs 0: no bound).
	MinArgs, MaxArgs int
	// MinPower is the power level the sender needs in the room.
	MinPower int
	// Subcommands, when set, take the first argument as their name.
	Subcommands []*Command
	// Run handles the command. An error made with Errorf is shown to the
	// user as it is; any other is logged and the user told it failed.
	Run func(ctx context.Context, c *CommandContext) error
}

// CommandContext is one invocation of a command.
type CommandContext struct {
	*Message
	Command *Command
	// Path is the command as typed up to its arguments ("!webhook new").
	Path string
	// Args are the arguments, split at spaces; quotes group ("a b").
	Args []string
	// RawArgs is the text after the command, as typed.
	RawArgs string
}

// UserError is an error meant for the user who ran the command.
type UserError struct{ msg string }

func (e *UserError) Error() string { return e.msg }

// Errorf returns an error shown to the user as it is.
func Errorf(format string, args ...any) error { return &UserError{fmt.Sprintf(format, args...)} }

// Command registers a command (replacing one with the same name).
func (b *Bot) Command(c *Command) {
	b.mu.Lock()
	b.commands[strings.ToLower(c.Name)] = c
	b.mu.Unlock()
}

// IsCommand reports whether text names one of the bot's commands (so
// other handlers can leave it alone).
func (b *Bot) IsCommand(text string) bool {
	rest, ok := strings.CutPrefix(text, b.CommandPrefix)
	if !ok {
		return false
	}
	name, _ := cutWord(rest)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.commands[strings.ToLower(name)] != nil
}

// runCommand runs the command in m, if it names one; handled is false for
// text that merely starts with the prefix.
func (b *Bot) runCommand(ctx context.Context, m *Message) (handled bool, err error) {
	text := strings.TrimPrefix(m.Body(), b.CommandPrefix)
	name, rest := cutWord(text)
	b.mu.Lock()
	cmd := b.commands[strings.ToLower(name)]
	b.mu.Unlock()
	if cmd == nil {
		return false, nil
	}
	path := b.CommandPrefix + cmd.Name
	// A subcommand needs at least the power its parents need.
	minPower := cmd.MinPower
	for len(cmd.Subcommands) > 0 {
		subName, subRest := cutWord(rest)
		var sub *Command
		for _, s := range cmd.Subcommands {
			if strings.EqualFold(s.Name, subName) {
				sub = s
			}
		}
		if sub == nil {
			_, err := m.Reply(ctx, subcommandHelp(path, cmd))
			return true, err
		}
		cmd, rest, path = sub, subRest, path+" "+sub.Name
		minPower = max(minPower, cmd.MinPower)
	}
	args, err := splitArgs(rest)
	if err != nil {
		_, err := m.Reply(ctx, fmt.Sprintf("%s. Usage: `%s %s`", err, path, cmd.Usage))
		return true, err
	}
	if len(args) < cmd.MinArgs || (cmd.MaxArgs > 0 && len(args) > cmd.MaxArgs) {
		_, err := m.Reply(ctx, fmt.Sprintf("Usage: `%s %s`", path, cmd.Usage))
		return true, err
	}
	if minPower > 0 {
		level, err := b.PowerLevel(ctx, m.RoomID(), m.Sender())
		if err != nil {
			return true, err
		}
		if level < minPower {
			_, err := m.Reply(ctx, fmt.Sprintf("`%s` needs power level %d in this room; you have %d.", path, minPower, level))
			return true, err
		}
	}
	runErr := cmd.Run(ctx, &CommandContext{Message: m, Command: cmd, Path: path, Args: args, RawArgs: strings.TrimSpace(rest)})
	if runErr == nil {
		return true, nil
	}
	var ue *UserError
	if errors.As(runErr, &ue) {
		_, err := m.Reply(ctx, ue.msg)
		return true, err
	}
	if _, err := m.Reply(ctx, fmt.Sprintf("`%s` failed; the bot's log says why.", path)); err != nil {
		return true, errors.Join(runErr, err)
	}
	return true, fmt.Errorf("%s: %w", path, runErr)
}

func (b *Bot) help(ctx context.Context, c *CommandContext) error {
	if len(c.Args) > 0 {
		b.mu.Lock()
		cmd := b.commands[strings.ToLower(strings.TrimPrefix(c.Args[0], b.CommandPrefix))]
		b.mu.Unlock()
		if cmd == nil {
			return Errorf("There is no command `%s`. Try `%shelp`.", c.Args[0], b.CommandPrefix)
		}
		path := b.CommandPrefix + cmd.Name
		if len(cmd.Subcommands) > 0 {
			_, err := c.Reply(ctx, subcommandHelp(path, cmd))
			return err
		}
		_, err := c.Reply(ctx, fmt.Sprintf("`%s`: %s", strings.TrimSpace(path+" "+cmd.Usage), cmd.Help))
		return err
	}
	var sb strings.Builder
	sb.WriteString("Commands:\n\n")
	for _, cmd := range b.sortedCommands() {
		fmt.Fprintf(&sb, "- `%s` — %s\n", strings.TrimSpace(b.CommandPrefix+cmd.Name+" "+cmd.Usage), cmd.Help)
	}
	_, err := c.Reply(ctx, sb.String())
	return err
}

func subcommandHelp(path string, cmd *Command) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "`%s` commands:\n\n", path)
	for _, s := range cmd.Subcommands {
		fmt.Fprintf(&sb, "- `%s` — %s\n", strings.TrimSpace(path+" "+s.Name+" "+s.Usage), s.Help)
	}
	return sb.String()
}

// cutWord splits off the first space-separated word.
func cutWord(s string) (word, rest string) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// splitArgs splits at whitespace; "double" or 'single' quotes group words
// and a backslash escapes the next character.
func splitArgs(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case unicode.IsSpace(r):
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed %c quote", quote)
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}
