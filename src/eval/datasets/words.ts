/**
 * Plain English word lists for the synthetic tasks (RULER draws its keys from adjective–noun
 * pairs and its word lists from common nouns, adjectives and verbs). Our own lists: what
 * matters is that the words are ordinary, distinct and lowercase.
 */

export const ADJECTIVES: readonly string[] = `
able absent acidic active agile alert amber ancient angry anxious arctic ashy awake bad
bald basic bent bitter black bland blue bold bored brave brief bright brisk broad broken
brown bumpy busy calm careful cheap cheerful chilly clean clever cloudy clumsy coarse cold
cool cosmic cozy crisp crooked cruel curious curly cute damp dark dear deep dense dizzy
dry dull dusty eager early easy elastic empty equal exact faded faint fair false famous
fancy fast fierce firm flat fluffy fresh friendly frozen funny fuzzy gentle giant glad
glossy golden good grand gray greasy great green grumpy hairy happy hard harsh heavy hidden
hollow honest huge humble hungry icy idle jolly juicy keen kind large late lazy light
little lively lonely long loose loud lucky magic mellow merry mighty mild misty modern
moist muddy narrow neat nervous new nice noble noisy odd oily old orange pale patient
perfect pink plain plump polite poor proud purple quick quiet rapid rare raw red rich
rigid ripe rough round royal rusty sad safe salty sandy sharp shiny short shy silent silky
silly simple sleepy slim slow small smooth soft solid sour spicy steady steep sticky stiff
stormy strange strict strong sunny super sweet swift tall tame tender thick thin tidy tiny
tough tricky ugly upset vast violet vivid warm weak wet white whole wide wild windy wise
witty wooden young zany
`.trim().split(/\s+/);

export const NOUNS: readonly string[] = `
acorn actor airport album anchor angle ankle apple apron arch arena arrow artist attic
avenue badge bakery ball balloon banana band bank barn basket bath beach beak bean bear
bed bee bell belt bench berry bicycle bird blanket boat bone book boot bottle bowl box
bread brick bridge broom brush bucket bug bus butter button cabin cactus cake camel camera
camp candle canoe canyon cap captain car card carpet carrot castle cat cave chair chalk
cheese cherry chess chicken chimney church circle city cliff clock cloud clown coat coffee
coin comet cookie corn cotton cow crab crayon crown cup curtain cushion daisy desk diamond
dinner dog doll dolphin donkey door dragon drawer dress drum duck eagle earth egg elbow
engine eraser fabric falcon farm feather fence fern field finger fire fish flag flame flute
forest fork fox frog fruit garden garlic gate gem ghost giraffe glass glove goat gold
grape grass guitar hammer hand harbor hat hawk heart helmet hill honey horse hotel house
island jacket jar jelly kettle key kitchen kite kitten ladder lake lamp lantern leaf lemon
letter library lily lion lizard lock magnet mango map marble market meadow melon mirror
monkey moon mountain mouse mug museum needle nest net ocean octopus office onion orchard
owl oyster paddle palace pancake panda paper parrot pasta peach peanut pear pebble pencil
penguin pepper piano picnic pillow pilot pine pizza planet plate pocket pond potato puppet
puzzle queen quilt rabbit radio rainbow raven ribbon river road robot rock rocket roof
rope rose ruler saddle sailor salad sand sandal scarf school scissors seal shadow shark
sheep shell ship shirt shoe shovel sink skate sled snail snake sock sofa spider spoon
squirrel stamp star station stone storm stove street sugar suitcase sun sweater table tent
thread tiger toast tomato tooth torch towel tower town toy tractor train tree truck trumpet
tulip turtle umbrella valley vase violin wagon wallet walrus wand watch water whale wheel
whistle window wolf worm yacht yard zebra
`.trim().split(/\s+/);

export const VERBS: readonly string[] = `
accept adapt admire agree allow answer argue arrive ask bake balance begin believe borrow
bounce build burn calculate carry catch celebrate change chase cheer choose clap climb
collect comfort cook count crawl create cry dance decide deliver describe design dig
discover dive draw dream drink drive drop earn eat enjoy escape explain explore fetch fill
find fix float fly fold follow forget gather giggle give glide grow guess guide hang help
hide hike hold hop hug hunt imagine invent join jump kick knit knock laugh lead learn lift
listen look march melt mend mix move nod notice open paint pick plant play point pour
practice pull push reach read relax remember repair rest ride roll row run sail save scrub
search share shout sing sip sit skip sleep slide smile sneeze sniff solve sort speak spin
splash stack stand stir stretch study swim swing talk taste teach think throw tickle trace
travel trust tumble turn visit wait walk wander wash watch wave whisper win wink wish
wonder work worry write yawn yell zoom
`.trim().split(/\s+/);
