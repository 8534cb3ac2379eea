<?php
// The test application test.sh serves with php-fpm behind nginx (tests/e2e.php drives it).
// Every answer is plain text; a gardenstate exception is answered with status 200 and
// "EXCEPTION <class>: <message>", so the tests can tell a clear exception from a PHP fatal
// error (which php-fpm turns into a 500).
//
// ?op=count        increments $_SESSION['count'], answers "<count> <pid>"
// ?op=hold         takes the session, writes its pid to $GDS_PHP_PIDFILE, sleeps (holding the lock)
// ?op=count_linger increments and answers, then (lock released) writes its pid and sleeps
// ?op=big          stores a value over the segment's max_value in the session
// ?op=big_end     the same, left for PHP to write at the end of the request (a warning, not a fatal)
// ?op=fatal       a PHP fatal error (memory exhausted) while the session is open (its lock and
//                  client slot must go back)
// ?op=object       stores an object in the session (json encoding)
// ?op=badid        starts a session with a malformed id (strict mode off)
// ?op=missing      attaches to a segment that does not exist
// ?op=incompatible opens the session segment with other creation options
// ?op=full         writes to a tiny segment until it is full
declare(strict_types=1);

require getenv('GDS_PHP_AUTOLOAD') ?: dirname(__DIR__, 2) . '/autoload.php';

use Gardenstate\GardenstateException;
use Gardenstate\SessionHandler;
use Gardenstate\Store;

header('Content-Type: text/plain');
$segment = getenv('GDS_PHP_SEGMENT');
$op = $_GET['op'] ?? 'count';

function start(string $segment): void
{
    session_set_save_handler(new SessionHandler($segment), true);
    session_start();
}

function linger(): void
{
    file_put_contents(getenv('GDS_PHP_PIDFILE'), (string)getmypid());
    sleep(60);
}

try {
    switch ($op) {
        case 'count':
            start($segment);
            $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
            $n = $_SESSION['count'];
            session_write_close();
            echo $n, ' ', getmypid(), "\n";
            break;
        case 'hold':
            start($segment);
            $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1; // never answered: must not count
            linger();
            break;
        case 'count_linger':
            start($segment);
            $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
            $n = $_SESSION['count'];
            session_write_close();
            echo $n, ' ', getmypid(), "\n";
            fastcgi_finish_request(); // answered: this increment must survive the kill below
            linger();
            break;
        case 'big':
            start($segment);
            $_SESSION['big'] = str_repeat('x', 2 * 1024 * 1024);
            session_write_close();
            echo "written\n";
            break;
        case 'big_end':
            start($segment);
            $_SESSION['big'] = str_repeat('x', 2 * 1024 * 1024);
            echo "end\n";
            break;
        case 'fatal':
            start($segment);
            $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
            // A fatal error proper (E_ERROR: no exception, no destructor runs), marked for test.sh.
            ini_set('memory_limit', (string)(memory_get_usage() + 4 * 1024 * 1024));
            $gds_test_intentional_fatal = str_repeat('x', 64 * 1024 * 1024);
            break;
        case 'object':
            start($segment);
            $_SESSION['obj'] = new ArrayObject([1]);
            session_write_close();
            echo "written\n";
            break;
        case 'badid':
            ini_set('session.use_strict_mode', '0');
            session_id('../../etc/passwd');
            start($segment);
            echo "started\n";
            break;
        case 'missing':
            session_set_save_handler(new SessionHandler(Store::attach($segment . '-missing')), true);
            echo "attached\n";
            break;
        case 'incompatible':
            Store::open($segment, ['max_value' => 12345]);
            echo "opened\n";
            break;
        case 'full':
            $s = Store::open($segment . '-tiny', ['max_entries' => 16, 'capacity_bytes' => 65536]);
            for ($i = 0; $i < 100000; $i++) {
                $s->set("k$i", str_repeat('v', 100));
            }
            echo "never full\n";
            break;
        default:
            http_response_code(404);
            echo "unknown op\n";
    }
} catch (GardenstateException $e) {
    echo 'EXCEPTION ', get_class($e), ': ', $e->getMessage(), "\n";
}
