#!/usr/bin/env perl
# checksrc (curl's model, docs/internals/CODE_STYLE.md): source rules clang-format cannot see.
#   ASSIGNCOND  no assignment inside an if/while/switch/for condition: assign, then test
#   BANNEDFUNC  no strcpy/strcat/sprintf/vsprintf/gets: use memcpy with a checked length,
#               snprintf, or kms_buf
#   ADDCMP      no `len + n > max` bounds check (the sum can wrap): write `max - len < n`
#               (likewise `max < len + n`)
# Comments, string and character literals are ignored.
# Usage: checksrc.pl [--exempt FILE] FILE...  prints file:line: RULE: why for each hit; exit 1
#        on any
#        checksrc.pl --self-test  each rule must flag its bad samples and pass its good ones
use strict;
use warnings;

my %WHY = (
    ASSIGNCOND => 'assignment inside a condition: assign first, then test the variable',
    BANNEDFUNC => 'banned function (unbounded copy): use memcpy with a checked length or snprintf',
    ADDCMP     => 'overflow-prone bounds check `a + b > c`: write `c - a < b`',
);
my %ASSIGN = map { $_ => 1 } qw(= += -= *= /= %= &= |= ^= <<= >>=);
my @PUNCT  = ('<<=', '>>=', '...', '->', '++', '--', '<<', '>>', '<=', '>=', '==', '!=', '&&', '||',
              '+=', '-=', '*=', '/=', '%=', '&=', '^=', '|=', '##');

# Blanks comments and the insides of string and character literals; keeps line breaks.
sub strip {
    my ($src) = @_;
    my ($out, $i, $n) = ('', 0, length $src);
    while ($i < $n) {
        my $c  = substr($src, $i, 1);
        my $c2 = substr($src, $i, 2);
        if ($c2 eq '/*') {
            my $e = index($src, '*/', $i + 2);
            $e = $n - 2 if $e < 0;
            (my $t = substr($src, $i, $e + 2 - $i)) =~ s/[^\n]/ /g;
            $out .= $t;
            $i = $e + 2;
        } elsif ($c2 eq '//') {
            my $e = index($src, "\n", $i);
            $e = $n if $e < 0;
            $out .= ' ' x ($e - $i);
            $i = $e;
        } elsif ($c eq '"' || $c eq "'") {
            my $j = $i + 1;
            while ($j < $n && substr($src, $j, 1) ne $c) {
                $j++ if substr($src, $j, 1) eq '\\';
                $j++;
            }
            (my $t = substr($src, $i + 1, $j - $i - 1)) =~ s/[^\n]/ /g;
            $out .= $c . $t . $c;
            $i = $j + 1;
        } else {
            $out .= $c;
            $i++;
        }
    }
    # Preprocessor conditions and includes are not code (`#include <a.h>` is no comparison).
    $out =~ s/^([ \t]*#[ \t]*(?:include|if|ifdef|ifndef|elif|else|endif|pragma|error|undef|line)\b[^\n]*)/' ' x length($1)/gme;
    return $out;
}

# [text, line] for each token of stripped source.
sub tokens {
    my ($code) = @_;
    my @t;
    my $line = 1;
    my $punct = join('|', map { quotemeta } @PUNCT);
    while ($code =~ /\G(?:(\n)|([ \t\r\f\\]+)|([A-Za-z_]\w*|\d[\w.]*|"[^"]*"|'[^']*'|$punct|.))/gcs) {
        if (defined $1) {
            $line++;
        } elsif (defined $3) {
            push @t, [$3, $line];
            $line += ($3 =~ tr/\n//);
        }
    }
    return @t;
}

sub is_operand_end {
    my ($tok) = @_;
    return $tok =~ /^(?:[A-Za-z_]\w*|\d[\w.]*|"[^"]*"|'[^']*'|\)|\])$/ && $tok ne 'return';
}

# Index of the token that closes the bracket opened at $i, or the last index.
sub closing {
    my ($t, $i) = @_;
    my $d = 0;
    for my $j ($i .. $#$t) {
        $d++ if $t->[$j][0] =~ /^[(\[{]$/;
        $d-- if $t->[$j][0] =~ /^[)\]}]$/;
        return $j if $d == 0;
    }
    return $#$t;
}

sub check_assigncond {
    my ($t, $hit) = @_;
    for my $i (0 .. $#$t - 1) {
        my $kw = $t->[$i][0];
        next unless $kw =~ /^(?:if|while|switch|for)$/ && $t->[$i + 1][0] eq '(';
        my $end = closing($t, $i + 1);
        my ($from, $to) = ($i + 2, $end - 1);
        if ($kw eq 'for') {    # only the middle clause is a condition
            my ($d, @semi) = (0);
            for my $j ($from .. $to) {
                $d++ if $t->[$j][0] =~ /^[(\[{]$/;
                $d-- if $t->[$j][0] =~ /^[)\]}]$/;
                push @semi, $j if $d == 0 && $t->[$j][0] eq ';';
            }
            next unless @semi == 2;
            ($from, $to) = ($semi[0] + 1, $semi[1] - 1);
        }
        my $braces = 0;    # compound literals' designated initialisers are no assignment
        for my $j ($from .. $to) {
            $braces++ if $t->[$j][0] eq '{';
            $braces-- if $t->[$j][0] eq '}';
            if ($braces == 0 && $ASSIGN{ $t->[$j][0] }) {
                $hit->('ASSIGNCOND', $t->[$j][1]);
                last;
            }
        }
    }
}

sub check_banned {
    my ($t, $hit) = @_;
    for my $i (0 .. $#$t - 1) {
        $hit->('BANNEDFUNC', $t->[$i][1])
            if $t->[$i][0] =~ /^(?:strcpy|strcat|sprintf|vsprintf|gets)$/ && $t->[$i + 1][0] eq '(';
    }
}

# Is tokens [$from..$to] a compile-time constant: literals, ALL_CAPS macros, sizeof?
sub is_const {
    my ($t, $from, $to) = @_;
    for (my $j = $from; $j <= $to; $j++) {
        my $tok = $t->[$j][0];
        if ($tok eq 'sizeof') {
            $j = $t->[$j + 1][0] eq '(' ? closing($t, $j + 1) : $j + 1 if $j < $to;
            next;
        }
        return 0 if $tok =~ /^[A-Za-z_]\w*$/ && $tok !~ /^[A-Z][A-Z0-9_]*$/;
    }
    return 1;
}

# Is the operand that ends (dir -1) or starts (dir +1) next to token $i a sum with at least two
# terms that are not constants (`len + n`, not `len + 1` or `off + sizeof(hdr)`)?
sub operand_is_sum {
    my ($t, $i, $dir) = @_;
    my ($d, $j, $edge) = (0, $i + $dir, $i + $dir);
    my @plus;
    for (; $j >= 0 && $j <= $#$t; $j += $dir) {
        my $tok = $t->[$j][0];
        if ($tok =~ /^[)\]]$/) {
            $d += $dir < 0 ? 1 : -1;
        } elsif ($tok =~ /^[(\[]$/) {
            $d += $dir < 0 ? -1 : 1;
        }
        last if $d < 0;
        next if $d > 0;
        last if $tok =~ /^(?:[,;{}?:!]|&&|\|\||==|!=|<|>|<=|>=|return)$/ || $ASSIGN{$tok};
        push @plus, $j if $tok eq '+' && $j > 0 && is_operand_end($t->[$j - 1][0]);
    }
    return 0 unless @plus;
    my ($lo, $hi) = $dir < 0 ? ($j + 1, $edge) : ($edge, $j - 1);
    my @cuts = sort { $a <=> $b } @plus;
    my ($vars, $from) = (0, $lo);
    for my $c (@cuts, $hi + 1) {
        $vars++ unless is_const($t, $from, $c - 1);
        $from = $c + 1;
    }
    return $vars >= 2;
}

sub check_addcmp {
    my ($t, $hit) = @_;
    for my $i (0 .. $#$t) {
        my $tok = $t->[$i][0];
        if (($tok eq '>' || $tok eq '>=') && operand_is_sum($t, $i, -1)) {
            $hit->('ADDCMP', $t->[$i][1]);
        } elsif (($tok eq '<' || $tok eq '<=') && operand_is_sum($t, $i, 1)) {
            $hit->('ADDCMP', $t->[$i][1]);
        }
    }
}

# Hits in one source text: list of [rule, line].
sub check_text {
    my ($src) = @_;
    my @hits;
    my $hit = sub { push @hits, [@_] };
    my @t = tokens(strip($src));
    check_assigncond(\@t, $hit);
    check_banned(\@t, $hit);
    check_addcmp(\@t, $hit);
    return sort { $a->[1] <=> $b->[1] } @hits;
}

# Each bad sample must be flagged by its rule (and only once); each good sample by none.
sub self_test {
    my @bad = (
        [ASSIGNCOND => 'if ((rc = f()) < 0) return rc;'],
        [ASSIGNCOND => 'while ((n = read(fd, b, sizeof(b))) > 0) use(n);'],
        [ASSIGNCOND => 'if ((p = strchr(s, 0x2c))) p++;'],
        [ASSIGNCOND => 'for (i = 0; (c = s[i]) != 0; i++) use(c);'],
        [ASSIGNCOND => 'while (x |= y) y--;'],
        [BANNEDFUNC => 'strcpy(d, s);'],
        [BANNEDFUNC => 'strcat(d, "x");'],
        [BANNEDFUNC => 'n = sprintf(d, "%d", 1);'],
        [BANNEDFUNC => 'gets(line);'],
        [ADDCMP     => 'if (len + n > max) return -1;'],
        [ADDCMP     => 'if (b->len + add >= b->cap) grow(b);'],
        [ADDCMP     => 'if (max < off + n) return -1;'],
        [ADDCMP     => 'if (n + 2 + argc >= CONFIG_MAX_ARGS) return -1;'],
        [ADDCMP     => 'return r->off + n > r->len;'],
    );
    my @good = (
        'rc = f(); if (rc < 0) return rc;',
        'if (a == b && c != d && e <= f && g >= h) x = 1;',
        'for (i = 0; i < n; i++) s[i] = 0;',
        'if (memcmp(&(struct p){.a = 1}, q, 4) == 0) x = 1;',
        '/* strcpy(d, s); if ((x = y)) */ n = snprintf(d, sizeof(d), "strcpy(%s)", s);',
        'if (max - len < n) return -1;',
        'if (p->len > max + 1) return -1;',
        'if (n + 1 >= cap || depth + 1 >= KMS_MAX_DEPTH) return -1;',
        'if (r->off + sizeof(hdr) > r->len || off + 2 * KMS_N > len) return -1;',
        'if (a > -1 && b < +1) x = 1;',
        "#include <stdio.h>\nif (x->y > z) w = 'a';",
    );
    my $fail = 0;
    for my $b (@bad) {
        my ($rule, $src) = @$b;
        my @h = check_text($src);
        my $ok = @h == 1 && $h[0][0] eq $rule;
        printf "%s %s must flag: %s%s\n", $ok ? 'ok  ' : 'FAIL', $rule, $src,
            $ok ? '' : ' (got: ' . join(',', map { $_->[0] } @h) . ')';
        $fail++ unless $ok;
    }
    for my $src (@good) {
        my @h = check_text($src);
        printf "%s clean: %s%s\n", @h ? 'FAIL' : 'ok  ', $src,
            @h ? ' (got: ' . join(',', map { $_->[0] } @h) . ')' : '';
        $fail++ if @h;
    }
    print $fail ? "checksrc self-test: $fail FAILED\n" : "checksrc self-test: all rules ok\n";
    return $fail ? 1 : 0;
}

exit self_test() if @ARGV && $ARGV[0] eq '--self-test';

# --exempt FILE: lines `path: RULE: source line` (trimmed) that may stay for now; matched by
# text, not line number. An entry that no longer matches is reported, not an error.
my %exempt;
if (@ARGV >= 2 && $ARGV[0] eq '--exempt') {
    my $ef = $ARGV[1];
    splice(@ARGV, 0, 2);
    open(my $fh, '<', $ef) or die "$ef: $!\n";
    while (my $l = <$fh>) {
        chomp $l;
        next if $l =~ /^\s*(?:#|$)/;
        my ($p, $r, $text) = split(/: /, $l, 3);
        die "$ef:$.: expected `path: RULE: source line`\n" unless defined $text && $WHY{$r};
        $exempt{"$p: $r: $text"} = 0;
    }
    close $fh;
}
my $n = 0;
for my $f (@ARGV) {
    open(my $fh, '<', $f) or die "$f: $!\n";
    local $/;
    my $src = <$fh>;
    close $fh;
    my @lines = split(/\n/, $src);
    for my $h (check_text($src)) {
        (my $text = $lines[$h->[1] - 1] // '') =~ s/^\s+|\s+$//g;
        my $key = "$f: $h->[0]: $text";
        if (exists $exempt{$key}) {
            $exempt{$key}++;
            next;
        }
        print "$f:$h->[1]: $h->[0]: $WHY{$h->[0]}\n";
        $n++;
    }
}
for my $k (sort grep { $exempt{$_} == 0 } keys %exempt) {
    print "note: exemption no longer needed (remove it): $k\n";
}
print $n ? "checksrc: $n problems in " . scalar(@ARGV) . " files\n"
         : "checksrc: " . scalar(@ARGV) . " files clean\n";
exit($n ? 1 : 0);
