# A refusal (HTTP 400) met while a transaction is being replayed: the POST
# is sent from the output plugin's change callback; the sync stops in error
# showing the status and the body, and start_sync resumes it.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use CalabiPushTest;
use CalabiSyncTest;

my ($node, $recv) = cdc_running_sync(undef, name => 'cdcrefuse');

# Every committed change acknowledged?
sub caught_up { return cdc_caught_up($node, 's') }

# the batch fills (batch_rows 100) inside the replay of a 1,000-row
# transaction: the refused POST is sent from the output plugin's callback
$recv->fault({ kind => 'refuse', status => 400, error => 'no thanks', count => 1 });
$node->safe_psql('postgres', q{INSERT INTO t SELECT 200000 + g, 'refused?' FROM generate_series(1, 1000) g});
ok(wait_for_state($node, 's', 'error'), 'a refusal inside a replayed transaction stops the sync in error');
like(sync_status($node, 's', 'last_error'), qr/HTTP 400.*no thanks/, '... showing the status and the body');
like(slurp_file($node->logfile), qr/ERROR:  the sync stopped, no retry can help: HTTP 400: \{"error": "no thanks"\}\n[^\n]*HINT:  [^\n]*\n[^\n]*CONTEXT:  slot "calabi_push_\w+", output plugin "calabi_push", in the change callback[^\n]*\n\tcalabi_push sync "s"\n/,
	'... raised from the output plugin\'s change callback');
$node->safe_psql('postgres', q{SELECT calabi_push.start_sync('s')});
ok(caught_up(), 'start_sync resumes after the refusal');
assert_dest_equals_source($node, 'public', 't', 'after a refusal mid-transaction');

$recv->stop;
$node->stop;
done_testing();
